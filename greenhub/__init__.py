"""greenhub: a hand-written hub for raw greenlets, on epoll, written to be read.

A runtime of its own, like ``tasklets``: it imports nothing of the server.
The greenlet engine (``flash_green.engines.greenlet``) runs each connection
in a greenlet on it; app code that wants to cooperate calls ``greenhub.sleep``
and ``greenhub.create_connection``::

    import greenhub

    def app(environ, start_response):
        greenhub.sleep(0.1)    # other greenlets run meanwhile
        ...

Where to read: ``hub.py`` (the loop, the timers, the cooperative socket,
with a discussion of the rules that keep it correct).
"""

from .hub import (
    CooperativeSocket,
    Event,
    Hub,
    HubError,
    HubStats,
    Timer,
    create_connection,
    get_hub,
    install,
    sleep,
)

__all__ = ["CooperativeSocket", "Event", "Hub", "HubError", "HubStats", "Timer", "create_connection",
           "get_hub", "install", "sleep"]
