"""Greenlet runtimes: raw greenlet switches, our hub, and the greenlet libraries gevent and eventlet.

A task is a greenlet, a C stack slice copied in and out on a switch. Raw
greenlets switch straight from one task to another; every other row goes
through a hub (ours, ``greenhub``; gevent's libev/libuv loop;
eventlet's epoll hub), so the gap is what a hub costs. gevent and eventlet
run the same programs through one adapter, ``GreenLibraryRuntime``, given
the few calls in which the two libraries differ (``GreenCalls``).
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from comparisons.micro.runtimes.base import Runtime, echo_server, parked_rss, ping_client


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

        return parked_rss(create, count)


class GreenhubRuntime(Runtime):
    """Greenlets on `greenhub`, the hand-written epoll hub of the greenlet engine."""

    name = "greenhub"
    label = "greenlet + our hub"
    module = "greenlet"
    benches = ("switch", "spawn", "memory", "timers", "io")

    def _run(self, main: Callable[[object], object]) -> object:
        import greenhub

        hub = greenhub.Hub()
        greenhub.install(hub)
        try:
            return hub.run(main, hub)
        finally:
            greenhub.install(None)
            hub.close()

    def _spawn_and_wait(self, hub, function, args_list) -> None:
        """Spawn function(*args) for each args; return when all have ended."""
        import greenhub

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
        import greenhub

        def main(hub):
            event = greenhub.Event(hub)

            def create(n: int) -> list:
                parked = [hub.spawn(event.wait) for _ in range(n)]
                hub.sleep(0)  # every spawned greenlet runs up to its wait
                return parked

            return parked_rss(create, count)

        return self._run(main)

    def timers(self, deadlines: list[float]) -> float:
        def main(hub):
            started = perf_counter()
            self._spawn_and_wait(hub, hub.sleep, [(d,) for d in deadlines])
            return perf_counter() - started

        return self._run(main)

    def io(self, rounds: int) -> float:
        import greenhub

        def main(hub):
            left, right = socket.socketpair()
            ping = greenhub.CooperativeSocket(left, hub)
            pong = greenhub.CooperativeSocket(right, hub)
            started = perf_counter()
            self._spawn_and_wait(hub, lambda end, *args: end(*args),
                                 [(ping_client, ping, rounds), (echo_server, pong)])
            return perf_counter() - started

        return self._run(main)


@dataclass(frozen=True)
class GreenCalls:
    """The calls of a greenlet library that the benchmarks use: where gevent and eventlet differ."""

    spawn: Callable[..., Any]
    sleep: Callable[[float], None]
    #: Wait until every greenlet of the list has ended.
    join_all: Callable[[list[Any]], None]
    #: A new event (``wait()`` parks the greenlet until ``set()``).
    event: Callable[[], Any]
    #: A connected pair of cooperative sockets.
    socketpair: Callable[[], tuple[Any, Any]]


class GreenLibraryRuntime(Runtime):
    """A greenlet library with its own hub: tasks are spawned greenlets, waits go through the hub."""

    benches = ("switch", "spawn", "memory", "timers", "io")

    def __init__(self, name: str, label: str, load: Callable[[], GreenCalls]) -> None:
        self.name = self.module = name
        self.label = label
        #: Imports the library (in the child only) and returns its calls.
        self.load = load

    def switch(self, rounds: int) -> float:
        green = self.load()

        def player():
            for _ in range(rounds):
                green.sleep(0)

        started = perf_counter()
        green.join_all([green.spawn(player), green.spawn(player)])
        return perf_counter() - started

    def spawn(self, count: int) -> float:
        green = self.load()

        def task():
            return None

        started = perf_counter()
        green.join_all([green.spawn(task) for _ in range(count)])
        return perf_counter() - started

    def memory(self, count: int) -> float:
        green = self.load()
        event = green.event()
        parked = [0]

        def idle():
            parked[0] += 1
            event.wait()

        def create(n: int) -> list:
            target = parked[0] + n
            tasks = [green.spawn(idle) for _ in range(n)]
            while parked[0] < target:
                green.sleep(0)
            return tasks

        return parked_rss(create, count)

    def timers(self, deadlines: list[float]) -> float:
        green = self.load()
        started = perf_counter()
        green.join_all([green.spawn(green.sleep, d) for d in deadlines])
        return perf_counter() - started

    def io(self, rounds: int) -> float:
        green = self.load()
        ping, pong = green.socketpair()
        started = perf_counter()
        green.join_all([green.spawn(ping_client, ping, rounds), green.spawn(echo_server, pong)])
        return perf_counter() - started


def gevent_calls() -> GreenCalls:
    """gevent: greenlets on a libev/libuv hub; ``gevent.sleep(0)`` goes through the hub."""
    import gevent
    import gevent.event
    import gevent.socket

    return GreenCalls(gevent.spawn, gevent.sleep, gevent.joinall, gevent.event.Event, gevent.socket.socketpair)


def eventlet_calls() -> GreenCalls:
    """eventlet: greenlets on its own epoll hub (maintenance mode upstream; it warns on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import eventlet
        import eventlet.event
        import eventlet.green.socket

    def join_all(threads: list[Any]) -> None:
        for thread in threads:
            thread.wait()

    return GreenCalls(eventlet.spawn, eventlet.sleep, join_all, eventlet.event.Event,
                      eventlet.green.socket.socketpair)


GEVENT = GreenLibraryRuntime("gevent", "gevent", gevent_calls)
EVENTLET = GreenLibraryRuntime("eventlet", "eventlet", eventlet_calls)
