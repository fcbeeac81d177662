"""What every accept loop does when `accept()` fails: the policy, written once.

Running out of file descriptors (EMFILE, ENFILE) or of kernel memory
(ENOBUFS, ENOMEM) is a state, not an event: the pending connection stays in
the listen backlog, so the listener is reported ready again at once and the
next `accept()` fails the same way. A loop that logs and retries at once
burns a core, writes megabytes of log a second, and - on a green hub or a
tasklet kernel, where the retry never yields - starves every connection that
could free an fd, and the stop signal too. So every engine, whatever its way
of waiting:

* stops accepting for a pause that starts short and doubles up to
  `MAX_PAUSE` (5 ms, 10 ms ... 1 s: a blip recovers at once, a siege costs
  one failed accept a second), waiting the engine's own way (a poll on its
  Waker, a hub sleep, a loop timer), so open connections keep being served
  and a stop request still gets through; new clients wait in the backlog;
* logs one warning when such an episode begins and one line when accepting
  works again (how long it lasted, how many accepts failed), nothing in
  between; a server hovering at its limit starts and ends many short
  episodes, so a new one is reported only if the last report is
  `LOG_INTERVAL` old (the others are counted, silently): at most two lines
  per `LOG_INTERVAL`, however long the siege;
* treats the errors Linux passes on from a connection that died in the
  backlog (ECONNABORTED, EPROTO, ENETDOWN ... see accept(2)) as "try the
  next one": that connection is gone, nothing repeats.

This is Go's net/http accept back-off with the log throttled, and what the
epoll engine did first. Any other error also pauses (never a busy loop);
an engine that is stopping checks its flag before asking us.
"""

from __future__ import annotations

import errno
import logging
import time

#: Errnos that mean "out of a resource": the next accept fails the same way
#: until something is released.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: Errnos of one dead pending connection (accept(2), "Error handling"):
#: the next accept may well succeed.
DEAD_CONNECTION = frozenset({
    errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
    errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH,
})

#: Connections a readiness loop (the reactor, asyncio's readers) accepts per
#: readiness of a listener; level-triggered polling reports the rest next
#: pass, so a connection storm cannot starve the connections already open.
ACCEPT_BATCH = 64

FIRST_PAUSE = 0.005
MAX_PAUSE = 1.0
#: Seconds between two reported episodes.
LOG_INTERVAL = 10.0


class AcceptBackoff:
    """One listener's accept failures: how long to pause, and what to log."""

    __slots__ = ("log", "pause", "failures", "since", "reported", "reported_at")

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.pause = 0.0
        self.failures = 0
        #: When the current episode of failures began (None: accepting fine).
        self.since: float | None = None
        #: The current episode was logged (so its end will be).
        self.reported = False
        self.reported_at = -LOG_INTERVAL

    def failed(self, exc: OSError) -> float:
        """Account for a failed accept(); seconds to wait before the next one."""
        if exc.errno in DEAD_CONNECTION:
            return 0.0
        self.failures += 1
        if self.since is not None:
            self.pause = min(self.pause * 2, MAX_PAUSE)
            return self.pause
        now = self.since = time.monotonic()
        self.pause = FIRST_PAUSE
        self.reported = now - self.reported_at >= LOG_INTERVAL
        if self.reported:
            self.reported_at = now
            what = "out of resources" if exc.errno in OUT_OF_RESOURCES else "unexpected error"
            self.log.warning("accept failed (%s): %s; pausing accepts, retrying for as long as it "
                             "lasts (up to every %.0f s)", what, exc, MAX_PAUSE)
        return self.pause

    def accepted(self) -> None:
        """A connection was accepted: end the episode of failures, if any."""
        if self.since is not None:
            if self.reported:
                self.log.info("accepting again after %.1f s (%d accepts failed)",
                              time.monotonic() - self.since, self.failures)
            self.since = None
            self.failures = 0
