"""The runtime adapters, one family of runtimes per module over the shared base (``base.Runtime``).

=============== ===========================================================
``generators``  a bare generator (the floor), our ``tasklets`` kernel
``greenlets``   raw greenlet, our hub, gevent and eventlet (one adapter)
``coroutines``  asyncio on the standard loop, and on uvloop
``os_tasks``    OS threads, forked processes
``callbacks``   an epoll loop calling functions, no tasks (io only)
=============== ===========================================================

``RUNTIMES`` lists them in the order of the study: floor first, then ours,
then the peers, then what the OS schedules.
"""

from __future__ import annotations

from comparisons.micro.runtimes.base import Runtime, parked_rss, rss_bytes
from comparisons.micro.runtimes.callbacks import EpollCallbacksRuntime
from comparisons.micro.runtimes.coroutines import AsyncioRuntime, UvloopRuntime
from comparisons.micro.runtimes.generators import GeneratorRuntime, TaskletsRuntime
from comparisons.micro.runtimes.greenlets import EVENTLET, GEVENT, GreenhubRuntime, GreenletRuntime
from comparisons.micro.runtimes.os_tasks import ProcessesRuntime, ThreadsRuntime

RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (
    GeneratorRuntime(), TaskletsRuntime(), GreenletRuntime(), GreenhubRuntime(),
    GEVENT, EVENTLET, AsyncioRuntime(), UvloopRuntime(),
    ThreadsRuntime(), ProcessesRuntime(), EpollCallbacksRuntime(),
)}

__all__ = ["RUNTIMES", "Runtime", "parked_rss", "rss_bytes"]
