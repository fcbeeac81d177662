"""No tasks at all: one epoll loop calling a function per ready fd (the v4 engine's model).

The floor of the io benchmark: what a wake-up costs when nothing has to be
resumed, only a callback called.
"""

from __future__ import annotations

import select
import socket
from time import perf_counter

from comparisons.micro.runtimes.base import Runtime


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
