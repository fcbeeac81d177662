"""Where the server listens: gunicorn's `--bind` forms, parsed, checked and opened.

The forms (the same names as gunicorn):

    HOST:PORT      TCP; `[::1]:PORT` for IPv6; port 0 picks a free port
    HOST           TCP on port 8000
    unix:PATH      a unix stream socket (also `unix://PATH`)
    fd://N         a listening socket this process inherited as descriptor N

and systemd socket activation: when `LISTEN_FDS`/`LISTEN_PID` name this
process, the sockets systemd passed (descriptors 3, 4, ...) are served
instead of any `--bind`, as gunicorn does; the variables are then removed,
so a child process never takes the sockets for its own.

Why a unix socket: behind a front end on the same machine (nginx) it skips
TCP entirely - no ports, no TIME_WAIT, and file permissions decide who may
connect. A socket file left behind by a server that died is replaced, but
only if it is a socket and nobody answers on it (checked by connecting);
the process that created the file removes it when it closes the listener
(a forked worker never does).

Every failure - a port in use, a bad port, an unknown host, a path that is
not a socket, no permission - is a `BindError` whose message is one line
that says which bind failed and why; the CLI prints it and exits non-zero.

Several binds make several listeners, all served by one process (each
engine waits on all of them its own way). With `--certfile` every TCP
listener - `HOST:PORT`, and an `fd://` or systemd socket of the internet
family - speaks TLS (as gunicorn, which applies it to every bind); a unix
socket stays plain: its only clients are local processes (the front end
that terminated TLS already), for which encryption protects nothing. So
`-b 0.0.0.0:443 -b unix:/run/flash.sock --certfile ...` serves https to
the world and plain HTTP to the local nginx from one process.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("flash.binds")

#: Port of a `-b HOST` without one (gunicorn's default).
DEFAULT_PORT = 8000
#: The first descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
#: sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_UNIX_PATH = 107


class BindError(Exception):
    """A bind that cannot be parsed or opened; the message is one line for the user."""


@dataclass(frozen=True)
class TCPBind:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"


@dataclass(frozen=True)
class UnixBind:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class FdBind:
    fd: int
    #: "fd://N" for an explicit bind, "systemd" for socket activation.
    origin: str = "fd"

    def __str__(self) -> str:
        return f"fd://{self.fd}" if self.origin == "fd" else f"systemd fd {self.fd}"


BindSpec = TCPBind | UnixBind | FdBind


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def parse_bind(text: str) -> BindSpec:
    """One `--bind` value -> its spec; BindError with the reason if malformed."""
    if text.startswith(("unix://", "unix:")):
        path = text[7:] if text.startswith("unix://") else text[5:]
        if not path:
            raise BindError(f"--bind {text!r}: unix: needs a path, e.g. unix:/run/flash.sock")
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise BindError(f"--bind {text!r}: a unix socket path may be at most {MAX_UNIX_PATH} bytes")
        return UnixBind(path)
    if text.startswith("fd://"):
        digits = text[5:]
        if not digits.isascii() or not digits.isdigit():
            raise BindError(f"--bind {text!r}: fd:// needs a descriptor number, e.g. fd://3")
        return FdBind(int(digits))
    return _parse_tcp(text)


def _parse_tcp(text: str) -> TCPBind:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host:
            raise BindError(f"--bind {text!r}: an IPv6 address goes in brackets, e.g. [::1]:8000")
        if rest and not rest.startswith(":"):
            raise BindError(f"--bind {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise BindError(f"--bind {text!r}: an IPv6 address needs brackets, e.g. [{text}]:8000")
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
    port = DEFAULT_PORT if port_text is None else _parse_port(text, port_text)
    if any(c.isspace() for c in host):
        raise BindError(f"--bind {text!r}: the host contains white space")
    return TCPBind(host or "0.0.0.0", port)


def _parse_port(text: str, port_text: str) -> int:
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise BindError(f"--bind {text!r}: the port must be a number from 0 to 65535, got {port_text!r}")
    return int(port_text)


def systemd_fds(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> list[int]:
    """Descriptors passed by systemd socket activation, or [] if none are for us.

    Used only when LISTEN_PID is this process (a variable inherited from a
    parent that was activated is not ours). Removes LISTEN_FDS, LISTEN_PID
    and LISTEN_FDNAMES either way, so no child re-uses them.
    """
    environ = os.environ if environ is None else environ
    count, listen_pid = environ.get("LISTEN_FDS"), environ.get("LISTEN_PID")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if count is None:
        return []
    pid = os.getpid() if pid is None else pid
    if listen_pid != str(pid):
        log.info("LISTEN_FDS is set for pid %s, not this process (%d): ignored", listen_pid, pid)
        return []
    if not count.isdigit() or int(count) == 0:
        raise BindError(f"systemd socket activation: LISTEN_FDS={count!r} is not a positive number")
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


def resolve_binds(binds: Sequence[str], environ: MutableMapping[str, str] | None = None) -> list[BindSpec]:
    """Every place to listen: systemd's sockets if activated, else each `--bind`."""
    activated = systemd_fds(environ)
    if activated:
        log.info("systemd socket activation: serving fds %s (--bind ignored)",
                 ", ".join(map(str, activated)))
        return [FdBind(fd, origin="systemd") for fd in activated]
    specs = [parse_bind(text) for text in binds]
    # Port 0 picks a free port at each bind: twice is two listeners.
    fixed = [spec for spec in specs if not (isinstance(spec, TCPBind) and spec.port == 0)]
    if len(set(fixed)) != len(fixed):
        raise BindError(f"--bind: the same address is given twice in {', '.join(binds)}")
    return specs


def require_tcp_for_reuse_port(specs: Sequence[BindSpec]) -> None:
    """--reuse-port makes each worker bind its own socket: only a TCP address can be bound again."""
    for spec in specs:
        if not isinstance(spec, TCPBind):
            raise BindError(f"--reuse-port works only with HOST:PORT binds, not {spec} "
                            "(drop --reuse-port: the workers then share the socket)")


# ---------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------


class Listener:
    """One listening socket and what it takes to close it properly.

    `name` is how the start-up line shows it (`http://HOST:PORT`,
    `https://HOST:PORT`, `unix:PATH`); `tls` says whether its connections
    speak TLS (see the module docstring). A unix socket file is removed by
    `close()` only in the process that created it, and only if the file is
    still that socket.
    """

    def __init__(self, sock: socket.socket, spec: BindSpec, created_path: str | None = None,
                 tls: bool = False) -> None:
        self.sock = sock
        self.spec = spec
        self.tls = tls and takes_tls(sock)
        self._created_path = created_path
        self._creator = os.getpid()
        self._inode = _inode(created_path) if created_path else None

    @property
    def family(self) -> int:
        return self.sock.family

    @property
    def name(self) -> str:
        return listener_name(self.sock, self.tls)

    def close(self) -> None:
        self.sock.close()
        path = self._created_path
        if path is None or os.getpid() != self._creator:
            return
        if _inode(path) == self._inode:
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("could not remove the socket file %s: %s", path, exc)

    def __repr__(self) -> str:
        return f"<Listener {self.name} fd={self.sock.fileno()}>"


def listener_name(sock: socket.socket, tls: bool = False) -> str:
    """`http://HOST:PORT` (`https://` with TLS) for TCP, `unix:PATH` for a unix socket."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return "unix:" + (os.fsdecode(address) if address else "(unnamed)")
    return f"{'https' if tls else 'http'}://{_bracketed(address[0])}:{address[1]}"


def takes_tls(sock: socket.socket) -> bool:
    """With --certfile, does this listener speak TLS? Every TCP one does, no unix one."""
    return sock.family in (socket.AF_INET, socket.AF_INET6)


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def open_listeners(specs: Sequence[BindSpec], backlog: int, *, reuse_port: bool = False,
                   unix_mode: int | None = None, listen: bool = True, tls: bool = False) -> list[Listener]:
    """Open every spec (all or none: on a failure the ones opened are closed).

    With `listen` False a TCP socket is bound but not listening: it reserves
    its port for workers that bind their own SO_REUSEPORT sockets there.
    With `tls` the TCP listeners are marked as speaking TLS.
    """
    if reuse_port:
        require_tcp_for_reuse_port(specs)
    opened: list[Listener] = []
    try:
        for spec in specs:
            opened.append(open_listener(spec, backlog, reuse_port=reuse_port, unix_mode=unix_mode,
                                        listen=listen, tls=tls))
    except BaseException:
        for listener in opened:
            listener.close()
        raise
    return opened


def open_listener(spec: BindSpec, backlog: int, *, reuse_port: bool = False,
                  unix_mode: int | None = None, listen: bool = True, tls: bool = False) -> Listener:
    if isinstance(spec, TCPBind):
        return Listener(bind_tcp(spec, backlog, reuse_port=reuse_port, listen=listen), spec, tls=tls)
    if isinstance(spec, UnixBind):
        return Listener(_bind_unix(spec, backlog, unix_mode), spec, created_path=spec.path)
    return Listener(_adopt_fd(spec), spec, tls=tls)


def bind_tcp(spec: TCPBind, backlog: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A TCP socket bound to `spec` with TCP_NODELAY set, listening unless told not to.

    Linux copies TCP_NODELAY from a listening socket to the sockets accept()
    returns, so every connection sends its small writes at once (no Nagle +
    delayed-ACK 40 ms stall on keep-alive).
    """
    family, address = _resolve(spec)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {spec}: {_tcp_reason(exc)}") from None
    sock.set_inheritable(True)
    return sock


def _resolve(spec: TCPBind) -> tuple[int, tuple]:
    try:
        infos = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise BindError(f"cannot listen on {spec}: unknown host {spec.host!r} ({reason})") from None
    family, _, _, _, address = infos[0]
    return family, address


def _tcp_reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another server listens there)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    return exc.strerror or str(exc)


def _bind_unix(spec: UnixBind, backlog: int, mode: int | None) -> socket.socket:
    _remove_stale_socket(spec.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The file gets its mode at bind() from the umask: one that denies
    # exactly what `mode` denies, rather than a chmod afterwards, leaves no
    # moment in which the socket is more open than asked.
    previous = os.umask(0o777 & ~mode) if mode is not None else None
    try:
        sock.bind(spec.path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {spec}: {exc.strerror or exc}") from None
    finally:
        if previous is not None:
            os.umask(previous)
    sock.set_inheritable(True)
    return sock


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse anything else in the way."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"cannot listen on unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("removing the stale socket file %s (nobody listens on it)", path)
        try:
            os.unlink(path)
        except OSError as exc:
            raise BindError(f"cannot remove the stale socket unix:{path}: {exc.strerror}") from None
        return
    except BlockingIOError:
        pass  # its accept queue is full: somebody listens
    except OSError as exc:
        raise BindError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise BindError(f"cannot listen on unix:{path}: another server is listening on it")


def _adopt_fd(spec: FdBind) -> socket.socket:
    """Take over an inherited descriptor, after checking it is a listening stream socket."""
    try:
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:
        why = "is not open" if exc.errno == errno.EBADF else "is not a socket" \
            if exc.errno == errno.ENOTSOCK else exc.strerror
        raise BindError(f"cannot serve {spec}: descriptor {spec.fd} {why}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise BindError(f"cannot serve {spec}: descriptor {spec.fd} is not a listening stream socket")
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)
    return sock


def reopen_with_reuse_port(listener: Listener, backlog: int) -> Listener:
    """A worker's own SO_REUSEPORT socket at the address the master reserved."""
    host, port = listener.sock.getsockname()[:2]
    listener.sock.close()
    spec = TCPBind(host, port)
    return Listener(bind_tcp(spec, backlog, reuse_port=True), spec, tls=listener.tls)


def server_address(sock: socket.socket) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT as the socket knows them.

    A unix socket has no host or port: its path stands in for the name and
    the port is empty (gunicorn's values); per request the Host header
    tells better (see `flash_green.proxy`).
    """
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return (os.fsdecode(address) if address else ""), ""
    return address[0], str(address[1])


def describe(listeners: Sequence[Listener]) -> str:
    return ", ".join(listener.name for listener in listeners)


def listeners_for(config: Config, *, listen: bool = True) -> list[Listener]:
    """Resolve, check and open every place the server listens (the CLI and the supervisor)."""
    specs = resolve_binds(config.bind)
    return open_listeners(specs, config.backlog, reuse_port=config.reuse_port,
                          unix_mode=config.unix_socket_mode, listen=listen,
                          tls=config.certfile is not None)


def close_all(listeners: Sequence[Listener]) -> None:
    for listener in listeners:
        listener.close()
