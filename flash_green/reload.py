"""`--reload`: restart the server when the app's code changes (for development).

The model
    A parent process watches, a child process serves. The child is the
    ordinary `serve` command (with `--workers N`, a supervisor and its
    workers) started as a subprocess with FLASH_RELOAD_MANIFEST naming a
    file: whichever process imports the app writes there the files of every
    module it imported from outside the standard library and site-packages,
    with the size and mtime it saw, whether the import succeeded or not (an
    observer the child adds to `flash_green.loader`: loading knows nothing
    of reloading). The
    parent watches those files, the `--reload-extra-file` ones and the config
    file (`-c`), and on a change stops the child (SIGTERM, graceful) and starts a
    new one.

Why the parent binds
    The parent opens every `-b` listener once and hands each child the
    sockets as `-b fd://N`. A client that connects while one child stops and
    the next loads the app waits in the listen backlog and is served by the
    new child, instead of being refused; `-b HOST:0` keeps its port for the
    whole session; a unix socket file is made once and removed when the
    parent ends.

Why polling with os.stat, not inotify (watchfiles, watchdog)
    A Python app imports tens to a few hundred files of its own: one stat()
    each per second costs microseconds. Polling sees a change however the
    editor saves it (in place, or a new file renamed over the old one), and
    on mounts where inotify says nothing (network file systems, some
    container volumes); it needs no dependency. gunicorn and uvicorn fall
    back to the same. The price is up to one interval of delay.

A change that cannot load
    A changed .py file is compiled in the parent first: a syntax error is
    logged and the running child keeps serving the previous code until the
    next change. Any other failure to load (an exception at import) makes
    the new child exit with code 4; the parent logs it and waits for the
    next change to try again. Other start-up failures (a port in use, a bad
    option) end the parent with the child's exit code, since no edit of the
    code can fix them.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import select
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections import deque
from dataclasses import dataclass, field

from . import binds, loader
from .startup import EXIT_APP_LOAD

log = logging.getLogger("flash.reload")

#: Set in the serving child: where it writes the files it imported.
MANIFEST_ENV = "FLASH_RELOAD_MANIFEST"
#: Seconds between two looks at the watched files.
POLL_INTERVAL = 0.5
#: Signals the parent passes on to the child as they are.
FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_LISTENING = re.compile(rb"listening on \S")
_PR_SET_PDEATHSIG = 1

#: (mtime in ns, size, inode): an editor that saves by renaming a new file
#: over the old one changes the inode even within one mtime tick.
Stamp = tuple[int, int, int]


# -- the child's side: which files did the app import? ------------------------

def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    dirs.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs)


def is_app_file(path: str, library_dirs: tuple[str, ...]) -> bool:
    """A source file of the app: a real file outside the stdlib and site-packages."""
    return os.path.isfile(path) and not os.path.realpath(path).startswith(library_dirs)


def in_child() -> bool:
    """True in the serving child of a reloader (which must not reload again)."""
    return bool(os.environ.get(MANIFEST_ENV))


def record_imports_on_load() -> None:
    """In the serving child: write the manifest after every load of the app
    (at start-up, in each worker, at a HUP reload)."""
    if in_child() and record_imports not in loader.LOAD_OBSERVERS:
        loader.LOAD_OBSERVERS.append(record_imports)


def record_imports(error: BaseException | None = None) -> None:
    """In a child of `--reload`: write the app's files to the manifest.

    With `error` (the app failed to load), the files its traceback passed
    through count too: the module that raised is no longer in sys.modules,
    and its fix is the change to wait for.
    """
    if not in_child():
        return
    target = os.environ[MANIFEST_ENV]
    paths = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    while error is not None:
        if isinstance(error, SyntaxError):
            paths.append(error.filename)
        tb = error.__traceback__
        while tb is not None:
            paths.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    library = _library_dirs()
    files = {}
    for path in filter(None, paths):
        path = os.path.abspath(path)
        if path not in files and is_app_file(path, library):
            files[path] = stamp(path)
    tmp = f"{target}.{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(files, handle)
    os.replace(tmp, target)  # several workers may write it at once


def stamp(path: str) -> Stamp | None:
    """What tells that a file changed (a `Stamp`); None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# -- the parent's side ----------------------------------------------------------

@dataclass
class Watcher:
    """Files and the stamp each had when the serving code was loaded."""

    stamps: dict[str, Stamp | None] = field(default_factory=dict)

    def watch(self, paths, stamps: dict[str, Stamp | None] | None = None) -> None:
        """Add `paths`, with the stamps the child saw (else as they are now)."""
        for path in paths:
            self.stamps[path] = (stamps or {}).get(path, stamp(path))

    def changed(self) -> list[str]:
        """Files whose stamp differs from the last look; remembers the new stamps."""
        changes = []
        for path, old in self.stamps.items():
            new = stamp(path)
            if new != old:
                self.stamps[path] = new
                changes.append(path)
        return changes


def syntax_error(paths: list[str]) -> str | None:
    """The first syntax error among the changed .py files, as one line."""
    for path in paths:
        if not path.endswith(".py"):
            continue
        try:
            with open(path, "rb") as handle:
                compile(handle.read(), path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            return f"{exc.filename}, line {exc.lineno}: {exc.msg}"
        except (OSError, ValueError):
            continue
    return None


class Reloader:
    """The parent: starts the serving child, watches, restarts it."""

    def __init__(self, argv: list[str], listeners: list[binds.Listener], extra_files: list[str],
                 graceful_timeout: float, cwd: str) -> None:
        self.argv = argv
        #: Where the child starts (it applies --chdir itself).
        self.cwd = cwd
        #: Opened here once, inherited by every child.
        self.listeners = listeners
        self.graceful_timeout = graceful_timeout
        self.watcher = Watcher()
        self.watcher.watch(os.path.abspath(path) for path in extra_files)
        self.manifest = os.path.join(tempfile.mkdtemp(prefix="flash-reload-"), "imports.json")
        self.manifest_stamp: Stamp | None = None
        self.child: subprocess.Popen | None = None
        self.served = False
        self.line = b""
        self.signals: deque[int] = deque()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def run(self) -> int:
        for signum in (*STOPPING, signal.SIGHUP, *FORWARDED):
            signal.signal(signum, self._queue_signal)
        log.info("reloader pid=%d: restarting the server when the app's files change", os.getpid())
        self.start()
        try:
            return self._loop()
        finally:
            self.stop()
            binds.close_all(self.listeners)
            for path in (self.manifest, os.path.dirname(self.manifest)):
                try:
                    os.rmdir(path) if os.path.isdir(path) else os.unlink(path)
                except OSError:
                    pass

    def _queue_signal(self, signum: int, frame) -> None:
        self.signals.append(signum)
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    def _loop(self) -> int:
        while True:
            self._wait()
            while self.signals:
                signum = self.signals.popleft()
                if signum in STOPPING:
                    code = self.stop(signum)
                    return code if code and code > 0 else 0
                if signum == signal.SIGHUP:
                    log.info("HUP: restarting the server")
                    self.restart()
                elif self.child is not None:
                    self.child.send_signal(signum)
            code = self._child_exit()
            if code is not None and not self.served and code != EXIT_APP_LOAD:
                return code
            self._read_manifest()
            changes = self.watcher.changed()
            if changes:
                self._on_change(changes)

    def _wait(self) -> None:
        fds = [self.wake_r] + ([self.child.stdout.fileno()] if self.child is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], POLL_INTERVAL)
        except InterruptedError:
            ready = []
        if self.wake_r in ready:
            while True:
                try:
                    if not os.read(self.wake_r, 512):
                        break
                except BlockingIOError:
                    break
        if self.child is not None and self.child.stdout.fileno() in ready:
            self._pass_on_output()

    def _pass_on_output(self) -> None:
        """Copy the child's stdout to ours; its start-up line says it serves."""
        data = os.read(self.child.stdout.fileno(), 65536)
        if not data:
            return
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        self.line = (self.line + data)[-4096:]
        match = _LISTENING.search(self.line)
        if match:
            self.served = True
            self.line = b""

    def _child_exit(self) -> int | None:
        """The exit code of a child that ended by itself (then it is gone)."""
        if self.child is None or self.child.poll() is None:
            return None
        code = self.child.returncode
        _pass_on_the_rest(self.child)
        self.child = None
        if code == EXIT_APP_LOAD:
            log.error("the app failed to load (see above); waiting for a change to try again")
        elif self.served:
            log.error("the server exited (code %s); waiting for a change to restart it", code)
        return code

    def _read_manifest(self) -> None:
        now = stamp(self.manifest)
        if now is None or now == self.manifest_stamp:
            return
        self.manifest_stamp = now
        try:
            with open(self.manifest) as handle:
                files = json.load(handle)
        except (OSError, ValueError):
            return
        new = [path for path in files if path not in self.watcher.stamps]
        self.watcher.watch(new, {path: tuple(s) if s else None for path, s in files.items()})
        if new:
            log.debug("watching %d more files", len(new))

    def _on_change(self, changes: list[str]) -> None:
        shown = ", ".join(os.path.relpath(path) for path in changes[:3])
        error = syntax_error(changes)
        if error:
            still = "the server keeps running the previous code" if self.child else "no server is running"
            log.error("reload: syntax error in %s; %s until the next change", error, still)
            return
        log.info("reload: %s changed; restarting the server", shown)
        self.restart()

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> None:
        env = dict(os.environ, **{MANIFEST_ENV: self.manifest})
        fds = [listener.sock.fileno() for listener in self.listeners]
        self.child = subprocess.Popen(self._child_argv(fds), stdout=subprocess.PIPE, env=env,
                                      cwd=self.cwd, pass_fds=fds, preexec_fn=_die_with_parent)

    def _child_argv(self, fds: list[int]) -> list[str]:
        """The parent's command line, its binds replaced by the sockets it opened."""
        inherited = [arg for fd in fds for arg in ("--bind", f"fd://{fd}")]
        return [sys.executable, "-m", "flash_green", *without_binds(self.argv), *inherited]

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """Stop the child (graceful with TERM) and return its exit code."""
        child, self.child = self.child, None
        if child is None:
            return None
        if child.poll() is None:
            child.send_signal(signum)
            try:
                child.wait(self.graceful_timeout + 5)
            except subprocess.TimeoutExpired:
                log.warning("the server did not stop within --graceful-timeout; killing it")
                child.kill()
                child.wait()
        _pass_on_the_rest(child)
        return child.returncode


def _pass_on_the_rest(child: subprocess.Popen) -> None:
    """Copy what an ended child printed to our stdout, then close its pipe."""
    fd = child.stdout.fileno()
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 65536)
        if not data:
            break
        sys.stdout.buffer.write(data)
    sys.stdout.flush()
    child.stdout.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the reloader dies (no orphan server)."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def without_binds(argv: list[str]) -> list[str]:
    """`argv` without its -b/--bind options."""
    out = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-b", "--bind"):
            skip = True
        elif not arg.startswith(("--bind=", "-b")):
            out.append(arg)
    return out
