"""Coroutine runtimes: asyncio tasks on the standard selector loop, and the same programs on uvloop.

A task is a coroutine wrapped in an ``asyncio.Task``; a switch is a trip
through the event loop's ready queue. uvloop swaps the loop (libuv, in
Cython) and keeps the programs, so the gap between the rows is the loop's.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable
from time import perf_counter

from comparisons.micro.runtimes.base import Runtime, rss_bytes


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
