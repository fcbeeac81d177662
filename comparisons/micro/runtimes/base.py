"""The shared base of the runtime adapters: what a runtime must implement, and how memory is measured.

A runtime is a way of running many tasks: in one process (generators,
greenlets, coroutines, threads) or in many (processes). Its adapter
implements, with the runtime's own public API, the programs of the
benchmarks it supports; each method runs one repeat and returns seconds
(or bytes, for ``memory``). Adapters import their runtime inside the
methods, so a child process imports only the one it measures. The two ends
of the io benchmark are written once here for every runtime whose sockets
look blocking (greenlets, threads, processes).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any, ClassVar


def rss_bytes() -> int:
    """This process's resident set size, from /proc (no allocation worth counting)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGESIZE")


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


def parked_rss(create: Callable[[int], object], count: int) -> float:
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


def round_trips(sock: Any, rounds: int) -> None:
    """The io benchmark's client: `rounds` one-byte round trips through the echo."""
    for _ in range(rounds):
        sock.sendall(b"x")
        sock.recv(1)


def ping_client(sock: Any, rounds: int) -> None:
    """`round_trips`, then close: the echo's EOF."""
    round_trips(sock, rounds)
    sock.close()


def echo_server(sock: Any) -> None:
    """The io benchmark's server: send each byte back until EOF, then close."""
    while data := sock.recv(1):
        sock.sendall(data)
    sock.close()
