"""Generator runtimes: a bare generator (the floor) and our generator-tasklet kernel (`tasklets`).

A task is a generator frame; a switch is a ``send`` (bare) or a trip through
the kernel's run queue (``tasklets.schedule()``), so the gap between the two
rows is what the scheduler costs.
"""

from __future__ import annotations

import gc
import socket
from time import perf_counter

from comparisons.micro.runtimes.base import Runtime, parked_rss, rss_bytes


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

        return parked_rss(create, count)


class TaskletsRuntime(Runtime):
    """Our kernel: `tasklets.Kernel`, spawn, schedule, sleep, io.Socket (public API only)."""

    name = "tasklets"
    label = "tasklets (our kernel)"
    module = "tasklets"
    benches = ("switch", "spawn", "memory", "timers", "io")

    @staticmethod
    def _run_timed(calls: list[tuple]) -> float:
        """Seconds a kernel takes to run ``function(*args)`` for each call, all spawned before the clock starts."""
        import tasklets

        with tasklets.Kernel() as kernel:
            for function, *args in calls:
                kernel.spawn(function, *args)
            started = perf_counter()
            kernel.run()
            return perf_counter() - started

    def switch(self, rounds: int) -> float:
        import tasklets

        def player():
            for _ in range(rounds):
                yield from tasklets.schedule()

        return self._run_timed([(player,), (player,)])

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

        return self._run_timed([(tasklets.sleep, deadline) for deadline in deadlines])

    def io(self, rounds: int) -> float:
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

        return self._run_timed([(pinger,), (ponger,)])
