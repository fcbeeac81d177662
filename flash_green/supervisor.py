"""The process layer: N worker processes of any engine under one supervisor.

The model
    The master binds the listening sockets (one per `-b`), forks N workers
    that inherit them, and from then on only supervises: it never accepts a
    connection and never runs the app. Each worker loads the app and runs
    one in-process engine (sequential, threaded, greenlet, ...) on the
    shared sockets (with TLS, on an SSL context of its own); the kernel
    hands each new connection to one worker that is waiting in accept/poll.
    `prefork` is N x sequential (Apache prefork, gunicorn sync), `worker` is
    N x a bounded thread pool (Apache worker MPM): both are compositions in
    the engine registry (`flash_green.engines.Supervised`), not engines of
    their own. N x an event loop (`--workers N`) is the hybrid that uses
    every core. With `--reuse-port` each worker binds
    its own SO_REUSEPORT socket instead, and the kernel balances by hash.

What forking buys
    Parallelism past the GIL (N interpreters on N cores) and isolation: a
    worker that crashes, leaks or wedges is replaced while the others serve.
What it costs
    A whole interpreter per worker (the app's memory N times, shared only
    where fork's copy-on-write pages stay untouched) and no shared state
    between workers: caches, counters and sessions live in one process.

What breaks it
    What breaks the engine each worker runs, N times over. `prefork` serves
    N clients at once: every slow client, slow upload, blocking handler or
    idle keep-alive connection pins a whole process, the N+1th client waits
    in the listen backlog, and a slowloris with N connections stops the
    server; so it sits behind a buffering proxy (nginx) that absorbs slow
    clients and keep-alive. `worker` holds N x T (`flash_green.engines.pool`).
    N x an event loop holds thousands of idle clients per process.

When to use it
    `prefork`: CPU-bound or not thread-safe apps behind a proxy, when
    robustness matters more than connection count (the gunicorn default,
    for good reasons). `worker`: blocking, I/O-bound apps with a known
    client count behind a proxy. `--workers N` of an event loop (tasklets,
    epoll, asyncio, gevent...): many waiting clients on every core.

Signals (as gunicorn): TERM graceful stop (the master closes its copy of
the listening socket; each worker takes its backlog, closes its copy and
finishes every request that reached it - `Engine.request_stop` - within
`--graceful-timeout`, then the rest is killed); INT and QUIT quick stop; HUP
graceful restart (new workers boot before the old ones are told to stop;
the master keeps the listening socket, so no connection is refused and a
retiring worker's idle keep-alive connections get their next request
answered with `Connection: close`); TTIN and TTOU one worker more or less;
USR1 reopen log files (workers too); CHLD reap. Handlers only queue the
signal and wake the loop; the loop acts.

With `--reuse-port` every worker has its own listening socket and accept
queue. A retiring worker takes its queue before closing the socket, so only
a connection the kernel hashes to it in the window between its last accept
and its close is reset (Linux >= 5.14 can migrate even those to a sibling
socket: `sysctl net.ipv4.tcp_migrate_req=1`).

Liveness (--timeout). Each worker owns a page of shared memory holding a
monotonic timestamp, its heartbeat; a store into shared memory costs no
system call. Where the app runs on the loop's thread, the loop stamps it
(`Engine.heartbeat()`: BlockingServer's accept loop every second and
`serve_connection` per request, the event loops at least every second), so
a request that never returns silences it - and a sequential worker is
silent while one request runs, so `--timeout` bounds a request there, as in
gunicorn's sync worker. Where the app runs on other threads (threaded,
event, worker), the stamp is the older of the loop's beat and the oldest
call into the app still running (`watchdog.RequestWatch`), so --timeout
bounds each request there too (gunicorn's gthread bounds only its loop).
cgi bounds each request's child itself (504). A worker silent for
`--timeout` is asked to log every thread's stack and raise `WorkerTimeout`
in the stuck request - a 500 where no head went out - and to stop (SIGABRT);
a replacement starts at once; if no fresh beat comes within
`watchdog.ABORT_GRACE`, faulthandler dumps its threads from C and SIGKILL
follows (`flash_green.watchdog`). Until an engine's loop beats
(`loop_heartbeat` False) a helper thread beats instead, which proves only
that the process lives.

--max-requests is the engine's own (`Engine.limit_requests`): a worker
stops after exactly N requests (plus those in flight) and is replaced.

Boot errors. Workers load the app after fork (so a monkey-patching engine
patches before the app's imports, HUP reloads the code, and nothing opened
at import time is shared by accident); they are forked with the engine's
signals blocked until the engine handles them. A worker that cannot load the app
exits with code 4; the master then stops everything and exits 4 with the
reason, instead of respawning in a loop. The start-up line is printed once
every first worker has booted.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import random
import select
import signal
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import NoReturn

from . import binds, patching, startup, stats, watchdog
from .logfiles import reopen_log_files
from .config import Config
from .engines.base import ENGINE_SIGNALS, HEARTBEAT_INTERVAL, Engine, Waker
from .loader import AppLoadError
from .startup import EXIT_APP_LOAD, EXIT_BIND, announce

log = logging.getLogger("flash.supervisor")

#: Exit code when a worker died before it booted for another reason.
EXIT_BOOT_ERROR = 3
#: Signals the master queues for its loop.
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                  signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
#: Extra seconds a worker gets past --graceful-timeout to exit by itself
#: (its engine's own deadline) before the master kills it.
KILL_MARGIN = 1.0
_PR_SET_PDEATHSIG = 1


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

    def beat_at(self, stamp: float) -> None:
        self._STAMP.pack_into(self._page, 0, stamp)

    def last(self) -> float:
        return self._STAMP.unpack_from(self._page, 0)[0]

    def close(self) -> None:
        self._page.close()


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
    #: When --timeout found it stuck and the master sent SIGABRT, and when
    #: (no fresh heartbeat since) the C-level dump signal.
    aborted_at: float | None = None
    dumped_at: float | None = None

    def last_sign_of_life(self) -> float:
        return max(self.slot.last(), self.spawned)


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
        self.wanted = config.workers or engine_cls.processes
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
        longest_wait = max(config.keep_alive, config.header_timeout, config.body_timeout)
        if config.timeout <= longest_wait:
            log.warning("--timeout %ss is not above --keep-alive/--header-timeout/--body-timeout "
                        "(%ss): a worker waiting on one client may be killed as stuck",
                        config.timeout, longest_wait)

    def _bind(self) -> list[binds.Listener]:
        config = self.config
        # With --reuse-port the master's socket is bound but not listening:
        # it reserves the port (port 0 becomes a real one) and joins no
        # accept queue; each worker binds and listens on its own
        # SO_REUSEPORT socket at this address.
        return binds.listeners_for(config, listen=not config.reuse_port)

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
        # The master's copy of the listening socket goes first: once every
        # worker has taken its backlog and closed its own, new clients are
        # refused instead of queueing for nobody.
        binds.close_all(self.listeners)
        self._signal_workers(signal.SIGTERM if graceful else signal.SIGQUIT)
        log.info("stopping %s: %d workers", "gracefully" if graceful else "now", len(self.workers))
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
            if worker.aborted_at is not None:
                self._finish_abort(worker, now)
            if worker.retiring_since is not None:
                if now - worker.retiring_since > self.config.graceful_timeout + KILL_MARGIN:
                    log.warning("worker %d overstayed --graceful-timeout; killing it", worker.pid)
                    self._kill(worker.pid, signal.SIGKILL)
                    worker.killed = True
                continue
            silent = now - worker.last_sign_of_life()
            if silent > self.config.timeout:
                self._abort(worker, silent)

    def _abort(self, worker: Worker, silent: float) -> None:
        """--timeout: a booted worker is asked to log its stacks and end the
        stuck request (SIGABRT, see `flash_green.watchdog`), and replaced at
        once; one that never booted has no Python to ask."""
        timeout = self.config.timeout
        if not worker.booted:
            log.error("worker %d did not finish booting within --timeout %ss; killing it",
                      worker.pid, timeout)
            self._kill(worker.pid, signal.SIGKILL)
            worker.killed = True
            return
        log.error("worker %d silent for %.1fs (--timeout %ss): a request or its loop is stuck; "
                  "asking it to log its stacks and abort (SIGABRT), starting a replacement",
                  worker.pid, silent, timeout)
        self._kill(worker.pid, signal.SIGABRT)
        worker.aborted_at = worker.retiring_since = time.monotonic()

    def _finish_abort(self, worker: Worker, now: float) -> None:
        """After SIGABRT: a fresh heartbeat means it recovered and stops
        gracefully (the retiring deadline applies); none within ABORT_GRACE
        means no Python can run: dump its threads from C, then SIGKILL."""
        if worker.slot.last() > worker.aborted_at:
            worker.aborted_at = None
        elif worker.dumped_at is not None:
            if now - worker.dumped_at >= self.tick:
                self._kill(worker.pid, signal.SIGKILL)
                worker.killed = True
        elif now - worker.aborted_at > watchdog.ABORT_GRACE:
            log.error("worker %d did not recover from SIGABRT within %ss; dumping its threads "
                      "from C (%s) and killing it", worker.pid, watchdog.ABORT_GRACE,
                      watchdog.C_DUMP_SIGNAL.name)
            self._kill(worker.pid, watchdog.C_DUMP_SIGNAL)
            worker.dumped_at = now

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
        # The child keeps the engine's signals blocked until its engine
        # handles them (Engine.run): until then the master's handlers, the
        # default action or SIG_IGN would swallow a TERM or a USR2, or kill
        # a booting worker.
        signal.pthread_sigmask(signal.SIG_BLOCK, ENGINE_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._worker_main(slot)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ENGINE_SIGNALS)
        self.workers[pid] = Worker(pid, self.generation, slot, time.monotonic())

    # -- a worker (runs in the child after fork) --------------------------------

    def _worker_main(self, slot: HeartbeatSlot) -> NoReturn:
        code = 1
        try:
            self._reset_signals()
            _die_with_master(self.pid)
            _reinit_event_libraries()
            random.seed()  # the --max-requests jitter must differ between siblings
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

    def _worker_listeners(self) -> list[binds.Listener]:
        """Every listener, shared with the master, or with --reuse-port this worker's own."""
        if not self.config.reuse_port:
            return self.listeners
        return [binds.reopen_with_reuse_port(listener, self.config.backlog) for listener in self.listeners]

    def _serve_in_worker(self, slot: HeartbeatSlot) -> int:
        config = self.config
        listeners = self._worker_listeners()
        if config.patch and self.engine_cls.name in patching.PATCHABLE:
            # Before the app's imports, as `python -m flash_green` does without
            # workers (the master stays unpatched); the engine then finds it done.
            patching.apply(self.engine_cls.name)
        app = startup.load(self.engine_cls, self.app_spec, self.factory)
        startup.serve(self.engine_cls, config, app, listeners, prepare=lambda engine: self._watch(engine, slot))
        return 0

    def _watch(self, engine: Engine, slot: HeartbeatSlot) -> None:
        """Wire the engine's heartbeat into `slot` (and, where the app runs
        off the loop, each call into the app), then tell the master."""
        watch = None
        if engine.app_off_loop:
            watch = watchdog.RequestWatch()
            engine.app = engine.wsgi.app = watch.wrap(engine.app)
            engine.heartbeat = watch.beat
            threading.Thread(target=watch.report, args=(slot.beat_at,), name="request-watch",
                             daemon=True).start()
        else:
            engine.heartbeat = slot.beat
        watchdog.install_abort(watch, self.config.timeout)
        slot.beat()
        # Tell the master at once (it would notice within a tick anyway);
        # the pipe is the master's, so the worker lets go of it afterwards.
        self.waker.wake()
        self.waker.close()
        threading.Thread(target=self._beat_until_the_loop_does, args=(engine,),
                         name="heartbeat", daemon=True).start()

    @staticmethod
    def _beat_until_the_loop_does(engine: Engine) -> None:
        """Fallback for engines whose loop does not call heartbeat() (yet)."""
        while not engine.loop_heartbeat and not engine.stopping:
            engine.heartbeat()
            time.sleep(HEARTBEAT_INTERVAL)


def run(engine_cls: type[Engine], config: Config, app_spec: str, factory: bool = False) -> int:
    """Supervise `config.workers` (or, for a composition, its own count) workers of `engine_cls`."""
    try:
        return Supervisor(engine_cls, config, app_spec, factory).run()
    except binds.BindError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_BIND
