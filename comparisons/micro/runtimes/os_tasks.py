"""Runtimes the OS schedules: threads (one process, the GIL between them) and forked processes.

No user-space scheduler at all: a switch is the kernel waking another thread
or process, a task costs a kernel stack (and, for processes, an address
space), which is why both are capped well below the green runtimes' sizes.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from time import perf_counter
from typing import ClassVar

from comparisons.micro.runtimes.base import Runtime, echo_server, parked_rss, round_trips


class ThreadsRuntime(Runtime):
    """OS threads: the kernel schedules, the GIL serialises the Python in between."""

    name = "threads"
    label = "OS threads"
    benches = ("switch", "spawn", "memory", "timers", "io")
    caps: ClassVar[dict[str, int]] = {"memory": 10_000, "timers": 2_000, "spawn": 5_000}
    start_count = 16

    @staticmethod
    def _start_and_join(threads: list[threading.Thread]) -> None:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

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
        self._start_and_join([threading.Thread(target=task) for _ in range(count)])
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
            return parked_rss(create, count)
        finally:
            event.set()

    def timers(self, deadlines: list[float]) -> float:
        started = perf_counter()
        self._start_and_join([threading.Thread(target=time.sleep, args=(d,)) for d in deadlines])
        return perf_counter() - started

    def io(self, rounds: int) -> float:
        ping, pong = socket.socketpair()
        thread = threading.Thread(target=echo_server, args=(pong,))
        thread.start()
        started = perf_counter()
        round_trips(ping, rounds)
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
            ping.close()  # else the child's copy keeps the socket open: no EOF
            echo_server(pong)

        pid = self._fork(echo)
        pong.close()
        started = perf_counter()
        round_trips(ping, rounds)
        elapsed = perf_counter() - started
        ping.close()
        os.waitpid(pid, 0)
        return elapsed
