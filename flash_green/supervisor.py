"""The process layer: N worker processes of any engine under one supervisor.

The model
    The master binds the listening socket, forks N workers that inherit it,
    and from then on only supervises: it never accepts a connection and never
    runs the app. Each worker loads the app and runs one in-process engine
    (sequential, threaded, greenlet, ...) on the shared socket; the kernel
    hands each new connection to one worker that is waiting in accept/poll.
    `prefork` is N x sequential (Apache prefork, gunicorn sync), `worker` is
    N x a bounded thread pool (Apache worker MPM), and N x an event loop is
    the hybrid that uses every core. With `--reuse-port` each worker binds
    its own SO_REUSEPORT socket instead, and the kernel balances by hash.

What forking buys
    Parallelism past the GIL (N interpreters on N cores) and isolation: a
    worker that crashes, leaks or wedges is replaced while the others serve.
What it costs
    A whole interpreter per worker (the app's memory N times, shared only
    where fork's copy-on-write pages stay untouched) and no shared state
    between workers: caches, counters and sessions live in one process.

Signals (as gunicorn): TERM graceful stop (in-flight requests finish within
`--graceful-timeout`, then the rest is killed); INT and QUIT quick stop; HUP
graceful restart (new workers boot before the old ones are told to stop;
the listening socket is never closed, so no connection is refused); TTIN and
TTOU one worker more or less; USR1 reopen log files (workers too); CHLD
reap. Handlers only queue the signal and wake the loop; the loop acts.

Liveness. Each worker owns a page of shared memory holding the monotonic
time of its last heartbeat. The engine's own loop calls `Engine.heartbeat()`
(BlockingServer's accept loop every second, `serve_connection` per request);
a store into shared memory costs no system call. A worker silent for
`--timeout` seconds is stuck - a handler looping forever, a blocked event
loop - and is killed and replaced. For an engine whose loop does not call
the hook yet (`loop_heartbeat` False), a helper thread beats instead, which
proves only that the process lives. A sequential worker is silent while one
request runs, so `--timeout` also bounds a request's duration there, as in
gunicorn's sync worker.

Boot errors. Workers load the app after fork (so a monkey-patching engine
patches before the app's imports, HUP reloads the code, and nothing opened
at import time is shared by accident). A worker that cannot load the app
exits with code 4; the master then stops everything and exits 4 with the
reason, instead of respawning in a loop. The start-up line is printed once
every first worker has booted.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import mmap
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import NoReturn

from . import binds, patching, stats
from .cli import EXIT_APP_LOAD, EXIT_BIND, announce
from .config import Config
from .engines.base import HEARTBEAT_INTERVAL, Capabilities, Engine, Waker
from .loader import AppLoadError, load_app

log = logging.getLogger("flash.supervisor")

#: Workers of a multiprocess engine (prefork, worker) when --workers is 0.
DEFAULT_WORKERS = 2
#: Exit code when a worker died before it booted for another reason.
EXIT_BOOT_ERROR = 3
#: Signals the master queues for its loop.
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                  signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
#: Extra seconds a worker gets past --graceful-timeout to exit by itself
#: (its engine's own deadline) before the master kills it.
KILL_MARGIN = 1.0
_PR_SET_PDEATHSIG = 1


def supervised_capabilities(caps: Capabilities, workers: int) -> Capabilities:
    """What `workers` processes of a model can do together.

    Each process still behaves as its model does, but with two or more a
    second client is served by another process: a slow client or a blocking
    handler holds only its own worker (up to N - 1 of them at once).
    """
    several = workers >= 2
    return dataclasses.replace(
        caps, concurrent=caps.concurrent or several, parallel=True,
        blocking_handler_stalls=caps.blocking_handler_stalls and not several,
        multiprocess=True,
    )


class HeartbeatSlot:
    """One worker's proof of life: a monotonic timestamp in shared memory.

    An anonymous mmap is MAP_SHARED, so after fork the worker's stores are
    the master's loads; 0.0 means "not booted yet". CLOCK_MONOTONIC is one
    clock for every process of the machine.
    """

    _STAMP = struct.Struct("d")

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)

    def beat(self) -> None:
        self._STAMP.pack_into(self._page, 0, time.monotonic())

    def last(self) -> float:
        return self._STAMP.unpack_from(self._page, 0)[0]

    def close(self) -> None:
        self._page.close()


class Pulse:
    """The worker's `engine.heartbeat`: beat, and recycle after max requests.

    Recycling sends SIGTERM to its own process, so every engine stops the
    way it always does (its own handler, in-flight requests finish).
    """

    def __init__(self, slot: HeartbeatSlot, engine: Engine, max_requests: int) -> None:
        self.slot = slot
        self.engine = engine
        self.max_requests = max_requests
        self.recycling = False

    def __call__(self) -> None:
        self.slot.beat()
        if self.max_requests and not self.recycling \
                and self.engine.counters.requests >= self.max_requests:
            self.recycling = True
            log.info("served %d requests (--max-requests): recycling this worker",
                     self.engine.counters.requests)
            os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Worker:
    """The master's record of one worker process."""

    pid: int
    generation: int
    slot: HeartbeatSlot
    spawned: float
    booted: bool = False
    #: When the master asked it to stop (None while it serves).
    retiring_since: float | None = None
    killed: bool = False

    def last_sign_of_life(self) -> float:
        return max(self.slot.last(), self.spawned)


def reopen_log_files() -> None:
    """USR1: reopen every logging file (after logrotate moved it away)."""
    for logger in (logging.getLogger(), logging.getLogger("flash.access")):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                with handler.lock:
                    if handler.stream is not None:
                        handler.stream.close()
                    # FileHandler reopens (in append mode) on its next record.
                    handler.stream = None


def _reinit_event_libraries() -> None:
    """Give a forked worker event-loop state of its own.

    The master never runs a loop, but an engine module may have created one
    at import time; an epoll fd inherited across fork is shared with the
    master and every sibling, so it must not be reused.
    """
    gevent = sys.modules.get("gevent")
    if gevent is not None:
        gevent.reinit()
    eventlet_hubs = sys.modules.get("eventlet.hubs")
    if eventlet_hubs is not None:
        eventlet_hubs.use_hub()  # drops the inherited hub; a fresh one is made on first use


def _die_with_master(master_pid: int) -> None:
    """Ask the kernel to SIGTERM this worker if the master dies (no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable; orphan protection off")
    if os.getppid() != master_pid:
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """The master process: binds, forks, watches, replaces; never serves."""

    def __init__(self, engine_cls: type[Engine], config: Config, app_spec: str,
                 factory: bool = False) -> None:
        self.engine_cls = engine_cls
        self.config = config
        self.app_spec = app_spec
        self.factory = factory
        self.wanted = config.workers or DEFAULT_WORKERS
        self.workers: dict[int, Worker] = {}
        self.generation = 0
        self.signals: deque[int] = deque()
        self.waker = Waker()
        self.pid = os.getpid()
        self.stop_deadline: float | None = None
        self.exit_code = 0
        self.announced = False
        self.listeners: list[binds.Listener] = []
        self.tick = min(HEARTBEAT_INTERVAL, config.timeout / 4)
        #: Where workers publish their --stats figures (None when off).
        self.stats: stats.SupervisorStats | None = None

    # -- the master ----------------------------------------------------------

    def run(self) -> int:
        self._warn_about_timeouts()
        self.listeners = self._bind()
        self.stats = stats.SupervisorStats.start(self.config)
        for signum in MASTER_SIGNALS:
            signal.signal(signum, self._queue_signal)
        log.info("supervisor pid=%d: %d x %s", self.pid, self.wanted, self.engine_cls.name)
        try:
            self._loop()
        finally:
            binds.close_all(self.listeners)
            self.waker.close()
            if self.stats is not None:
                self.stats.close()
        log.info("supervisor stopped")
        return self.exit_code

    def _warn_about_timeouts(self) -> None:
        config = self.config
        longest_wait = max(config.keep_alive, config.header_timeout)
        if config.timeout <= longest_wait:
            log.warning("--timeout %ss is not above --keep-alive/--header-timeout (%ss): a "
                        "worker waiting on one client may be killed as stuck",
                        config.timeout, longest_wait)

    def _bind(self) -> list[binds.Listener]:
        config = self.config
        # With --reuse-port the master's socket is bound but not listening:
        # it reserves the port (port 0 becomes a real one) and joins no
        # accept queue; each worker binds and listens on its own
        # SO_REUSEPORT socket at this address.
        return binds.listeners_for(config.bind, self.engine_cls.name, config.backlog,
                                   reuse_port=config.reuse_port, unix_mode=config.unix_socket_mode,
                                   listen=not config.reuse_port)

    def _queue_signal(self, signum: int, frame) -> None:
        self.signals.append(signum)
        self.waker.wake()

    def _loop(self) -> None:
        while True:
            while self.signals:
                self._handle_signal(self.signals.popleft())
            self._reap()
            if self.stats is not None:
                self.stats.tick(self.workers)
            if self.stop_deadline is not None:
                if not self.workers:
                    return
                self._enforce_stop_deadline()
            else:
                self._watch_workers()
                self._maintain()
                self._announce_when_booted()
            self._wait()

    def _wait(self) -> None:
        try:
            select.select([self.waker.rfd], [], [], self.tick)
        except InterruptedError:
            pass
        self.waker.clear()

    def _handle_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # the loop reaps on every pass
        if signum == signal.SIGUSR1:
            log.info("USR1: reopening log files")
            reopen_log_files()
            self._signal_workers(signal.SIGUSR1)
            return
        if signum == signal.SIGUSR2:
            log.info("USR2: asking every worker to dump its state")
            self._signal_workers(signal.SIGUSR2)
            return
        if signum == signal.SIGTERM:
            self._stop(graceful=True)
            return
        if signum in (signal.SIGINT, signal.SIGQUIT):
            self._stop(graceful=False)
            return
        if self.stop_deadline is not None:
            return
        if signum == signal.SIGHUP:
            self.generation += 1
            log.info("HUP: booting %d new workers; the old ones stop once they are up", self.wanted)
        elif signum == signal.SIGTTIN:
            self.wanted += 1
            log.info("TTIN: %d workers", self.wanted)
        elif signum == signal.SIGTTOU:
            self.wanted = max(1, self.wanted - 1)
            log.info("TTOU: %d workers", self.wanted)

    def _stop(self, graceful: bool, exit_code: int | None = None) -> None:
        if exit_code is not None:
            self.exit_code = exit_code
        if graceful and self.stop_deadline is not None:
            return
        log.info("stopping %s: %d workers", "gracefully" if graceful else "now", len(self.workers))
        self._signal_workers(signal.SIGTERM if graceful else signal.SIGQUIT)
        grace = self.config.graceful_timeout if graceful else 0.0
        self.stop_deadline = time.monotonic() + grace + KILL_MARGIN

    def _signal_workers(self, signum: int) -> None:
        for worker in list(self.workers.values()):
            self._kill(worker.pid, signum)

    @staticmethod
    def _kill(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # already dead; the loop reaps it

    def _enforce_stop_deadline(self) -> None:
        if time.monotonic() < self.stop_deadline:
            return
        for worker in self.workers.values():
            if not worker.killed:
                log.warning("worker %d still running after --graceful-timeout; killing it", worker.pid)
                self._kill(worker.pid, signal.SIGKILL)
                worker.killed = True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                worker.booted = worker.booted or worker.slot.last() > 0
                worker.slot.close()
                self._on_exit(worker, os.waitstatus_to_exitcode(status))

    def _on_exit(self, worker: Worker, code: int) -> None:
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if code == EXIT_APP_LOAD and self.exit_code != EXIT_APP_LOAD:
            log.error("worker %d could not load the app %r (see above): stopping, not respawning",
                      worker.pid, self.app_spec)
            self._stop(graceful=True, exit_code=EXIT_APP_LOAD)
        elif self.stop_deadline is not None or worker.retiring_since is not None:
            log.info("worker %d exited (%s)", worker.pid, how)
        elif not worker.booted:
            log.error("worker %d died while booting (%s): stopping, not respawning", worker.pid, how)
            self._stop(graceful=True, exit_code=EXIT_BOOT_ERROR)
        elif code == 0:
            log.info("worker %d recycled itself; replacing it", worker.pid)
        else:
            log.warning("worker %d died (%s); replacing it", worker.pid, how)

    def _watch_workers(self) -> None:
        """Note boots; kill the silent; kill the retired that overstay."""
        now = time.monotonic()
        for worker in self.workers.values():
            if not worker.booted and worker.slot.last() > 0:
                worker.booted = True
                log.info("worker %d booted", worker.pid)
            if worker.killed:
                continue
            if worker.retiring_since is not None:
                if now - worker.retiring_since > self.config.graceful_timeout + KILL_MARGIN:
                    log.warning("worker %d overstayed --graceful-timeout; killing it", worker.pid)
                    self._kill(worker.pid, signal.SIGKILL)
                    worker.killed = True
                continue
            silent = now - worker.last_sign_of_life()
            if silent > self.config.timeout:
                state = "its loop is stuck" if worker.booted else "it did not finish booting"
                log.error("worker %d silent for %.1fs (--timeout %ss): %s; killing it "
                          "and starting a replacement", worker.pid, silent, self.config.timeout, state)
                self._kill(worker.pid, signal.SIGKILL)
                worker.killed = True

    def _maintain(self) -> None:
        """Spawn up to the wanted count; retire extras and old generations."""
        current = sorted((w for w in self.workers.values()
                          if w.generation == self.generation and w.retiring_since is None
                          and not w.killed), key=lambda w: w.spawned)
        for _ in range(self.wanted - len(current)):
            self._spawn()
        for worker in current[:max(0, len(current) - self.wanted)]:
            self._retire(worker, "one worker less")
        if sum(w.booted for w in current) >= self.wanted:
            for worker in list(self.workers.values()):
                if worker.generation < self.generation and worker.retiring_since is None:
                    self._retire(worker, "replaced by a new generation")

    def _retire(self, worker: Worker, why: str) -> None:
        log.info("stopping worker %d gracefully (%s)", worker.pid, why)
        worker.retiring_since = time.monotonic()
        self._kill(worker.pid, signal.SIGTERM)

    def _announce_when_booted(self) -> None:
        if not self.announced and sum(w.booted for w in self.workers.values()) >= self.wanted:
            self.announced = True
            announce(self.engine_cls.name, self.listeners, self.app_spec)

    def _spawn(self) -> None:
        slot = HeartbeatSlot()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._worker_main(slot)
        self.workers[pid] = Worker(pid, self.generation, slot, time.monotonic())

    # -- a worker (runs in the child after fork) --------------------------------

    def _worker_main(self, slot: HeartbeatSlot) -> NoReturn:
        code = 1
        try:
            self._reset_signals()
            _die_with_master(self.pid)
            _reinit_event_libraries()
            random.seed()  # the jitter below must differ between siblings
            code = self._serve_in_worker(slot)
        except AppLoadError as exc:
            sys.stderr.write(f"flash: {exc}\n")  # one write: siblings may fail at once
            code = EXIT_APP_LOAD
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(code)

    @staticmethod
    def _reset_signals() -> None:
        """The master's handlers are not the worker's: the engine installs
        TERM/INT/QUIT itself; HUP/TTIN/TTOU are the master's business."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, lambda signum, frame: reopen_log_files())

    def _worker_listener(self) -> socket.socket:
        if not self.config.reuse_port:
            return self.listeners[0].sock
        return binds.reopen_with_reuse_port(self.listeners[0], self.config.backlog).sock

    def _serve_in_worker(self, slot: HeartbeatSlot) -> int:
        config = self.config
        listener = self._worker_listener()
        if config.patch and self.engine_cls.name in patching.PATCHABLE:
            # Before the app's imports, as `python -m flash_green` does without
            # workers (the master stays unpatched); the engine then finds it done.
            patching.apply(self.engine_cls.name)
        app = load_app(self.app_spec, self.factory)
        refusal = self.engine_cls.refuse_app(app)
        if refusal:
            raise AppLoadError(f"{self.app_spec}: {refusal}")
        engine = self.engine_cls(config, app, listener)
        max_requests = config.max_requests
        if max_requests and config.max_requests_jitter:
            max_requests += random.randint(0, config.max_requests_jitter)
        engine.heartbeat = Pulse(slot, engine, max_requests)
        slot.beat()
        # Tell the master at once (it would notice within a tick anyway);
        # the pipe is the master's, so the worker lets go of it afterwards.
        self.waker.wake()
        self.waker.close()
        threading.Thread(target=self._beat_until_the_loop_does, args=(engine,),
                         name="heartbeat", daemon=True).start()
        engine.run()
        return 0

    @staticmethod
    def _beat_until_the_loop_does(engine: Engine) -> None:
        """Fallback for engines whose loop does not call heartbeat() (yet)."""
        while not engine.loop_heartbeat and not engine.stopping:
            engine.heartbeat()
            time.sleep(HEARTBEAT_INTERVAL)


def run(engine_cls: type[Engine], config: Config, app_spec: str, factory: bool = False) -> int:
    """Supervise `config.workers` (or DEFAULT_WORKERS) workers of `engine_cls`."""
    try:
        return Supervisor(engine_cls, config, app_spec, factory).run()
    except binds.BindError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_BIND
