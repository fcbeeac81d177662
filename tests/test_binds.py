"""Where the server listens (flash_green/binds.py): parsing, opening, inherited sockets."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from comparisons.childproc import LISTENING, ROOT, child_env, read_announcement, stop_child
from flash_green import binds
from flash_green.binds import BindError, FdBind, TCPBind, UnixBind, parse_bind

from .httpclient import Client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def short_dir():
    """A directory whose socket paths stay under sun_path's 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="flash-binds-") as path:
        yield path


# -- parsing ---------------------------------------------------------------------


@pytest.mark.parametrize("text, spec", [
    ("127.0.0.1:8080", TCPBind("127.0.0.1", 8080)),
    ("localhost", TCPBind("localhost", 8000)),
    (":9000", TCPBind("0.0.0.0", 9000)),
    ("[::1]:0", TCPBind("::1", 0)),
    ("[::]", TCPBind("::", 8000)),
    ("unix:/run/flash.sock", UnixBind("/run/flash.sock")),
    ("unix:///run/flash.sock", UnixBind("/run/flash.sock")),
    ("unix:relative.sock", UnixBind("relative.sock")),
    ("fd://3", FdBind(3)),
])
def test_gunicorn_bind_forms_parse(text: str, spec) -> None:
    assert parse_bind(text) == spec


@pytest.mark.parametrize("text, says", [
    ("127.0.0.1:65536", "0 to 65535"),
    ("127.0.0.1:http", "0 to 65535"),
    ("127.0.0.1:", "0 to 65535"),
    ("::1:8000", "needs brackets"),
    ("[::1", "brackets"),
    ("[::1]8000", "[IPV6]:PORT"),
    ("unix:", "needs a path"),
    ("unix:/" + "x" * 120, "at most 107 bytes"),
    ("fd://three", "descriptor number"),
    ("fd://", "descriptor number"),
    ("bad host:80", "white space"),
])
def test_malformed_binds_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BindError, match=r".*") as raised:
        parse_bind(text)
    assert says in str(raised.value) and repr(text) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_same_address_twice_is_refused() -> None:
    with pytest.raises(BindError, match="twice"):
        binds.resolve_binds(["127.0.0.1:8000", "127.0.0.1:8000"], environ={})


def test_reuse_port_is_refused_for_unix_and_fd_binds() -> None:
    for spec in (UnixBind("/tmp/x.sock"), FdBind(3)):
        with pytest.raises(BindError, match="--reuse-port works only with HOST:PORT"):
            binds.open_listeners([spec], 16, reuse_port=True)


# -- systemd socket activation ------------------------------------------------------------


def test_systemd_sockets_are_used_when_listen_pid_is_ours_and_the_variables_are_cleared() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "a:b", "KEEP": "1"}
    assert binds.resolve_binds(["127.0.0.1:8000"], env) == [FdBind(3, "systemd"), FdBind(4, "systemd")]
    assert env == {"KEEP": "1"}


def test_systemd_sockets_meant_for_another_process_are_ignored_and_cleared() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}
    assert binds.resolve_binds(["127.0.0.1:8000"], env) == [TCPBind("127.0.0.1", 8000)]
    assert env == {}


def test_a_bad_listen_fds_is_one_clear_error() -> None:
    with pytest.raises(BindError, match="LISTEN_FDS='x'"):
        binds.systemd_fds({"LISTEN_FDS": "x", "LISTEN_PID": str(os.getpid())})


# -- opening -----------------------------------------------------------------------------


def test_a_port_in_use_is_one_clear_line() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(BindError, match="already in use"):
            binds.open_listeners([TCPBind("127.0.0.1", taken.getsockname()[1])], 16)
    finally:
        taken.close()


def test_an_unknown_host_is_one_clear_line() -> None:
    with pytest.raises(BindError, match="unknown host 'no-such-host.invalid'"):
        binds.open_listeners([TCPBind("no-such-host.invalid", 0)], 16)


def test_a_unix_socket_gets_the_mode_asked_for_and_is_removed_on_close(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    [listener] = binds.open_listeners([UnixBind(path)], 16, unix_mode=0o660)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660 and listener.name == f"unix:{path}"
    listener.close()
    assert not os.path.exists(path)


def test_a_stale_socket_file_is_replaced(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: what a killed server leaves
    [listener] = binds.open_listeners([UnixBind(path)], 16)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
    listener.close()


def test_a_socket_somebody_listens_on_is_not_taken_over(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    [first] = binds.open_listeners([UnixBind(path)], 16)
    try:
        with pytest.raises(BindError, match="another server is listening on it"):
            binds.open_listeners([UnixBind(path)], 16)
        assert os.path.exists(path)
    finally:
        first.close()


def test_a_path_that_is_not_a_socket_is_left_alone(short_dir: str) -> None:
    path = os.path.join(short_dir, "data.txt")
    with open(path, "w") as f:
        f.write("precious")
    with pytest.raises(BindError, match="exists and is not a socket"):
        binds.open_listeners([UnixBind(path)], 16)
    with open(path) as f:
        assert f.read() == "precious"


def test_a_missing_directory_is_one_clear_line(short_dir: str) -> None:
    with pytest.raises(BindError, match="No such file or directory"):
        binds.open_listeners([UnixBind(os.path.join(short_dir, "nope", "s.sock"))], 16)


def test_a_forked_worker_never_removes_the_socket_file(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    [listener] = binds.open_listeners([UnixBind(path)], 16)
    pid = os.fork()
    if pid == 0:
        listener.close()
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.exists(path), "a forked child removed its parent's socket file"
    listener.close()
    assert not os.path.exists(path)


def test_a_socket_file_replaced_by_another_server_is_not_removed(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    [listener] = binds.open_listeners([UnixBind(path)], 16)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    listener.close()
    assert os.path.exists(path)
    other.close()


def test_an_inherited_descriptor_must_be_a_listening_stream_socket() -> None:
    with socket.socket() as unbound, pytest.raises(BindError, match="not a listening stream socket"):
        binds.open_listeners([FdBind(unbound.fileno())], 16)
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(BindError, match="is not a socket"):
            binds.open_listeners([FdBind(read_end)], 16)
    finally:
        os.close(read_end)
        os.close(write_end)


# -- through the CLI, with and without the supervisor -----------------------------------------


def serve(*args: str, timeout: float = 30.0, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flash_green", "serve", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=popen.pop("env", child_env()), **popen)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_a_bind_error_is_one_line_and_a_non_zero_exit(workers: list[str], short_dir: str) -> None:
    path = os.path.join(short_dir, "file")
    open(path, "w").close()
    done = serve("-b", f"unix:{path}", *workers)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == \
        f"flash: cannot listen on unix:{path}: the path exists and is not a socket"
    assert "Traceback" not in done.stderr


def inherited_listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@contextlib.contextmanager
def running(cmd: list[str], sock: socket.socket) -> Iterator[re.Match]:
    """Run `cmd` with `sock` inherited; yield its start-up line's match; stop it by PID."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=child_env(),
                            pass_fds=(sock.fileno(),), start_new_session=True)
    try:
        match, seen = read_announcement(proc, LISTENING, 30)
        assert match, seen
        sock.close()  # the child holds it now
        yield match
    finally:
        stop_child(proc, 10, session=True)
        proc.stdout.close()


def assert_serves(port: int) -> None:
    with Client(("127.0.0.1", port)) as client:
        assert client.request("GET", "/").body == b"Hello, World!"


def test_fd_bind_serves_a_socket_the_parent_bound() -> None:
    sock = inherited_listener()
    port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "flash_green", "serve", "--engine", "epoll", "-b", f"fd://{sock.fileno()}"]
    with running(cmd, sock) as announced:
        assert int(announced.group(2)) == port
        assert_serves(port)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_systemd_socket_activation_serves_fd_3(workers: list[str]) -> None:
    """As systemd starts a socket-activated service: fd 3 listening, LISTEN_PID = the service's pid."""
    sock = inherited_listener()
    port = sock.getsockname()[1]
    serve = [sys.executable, "-m", "flash_green", "serve", "--engine", "threaded", *workers, "-b", "127.0.0.1:1"]
    as_systemd = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                  "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
                  "os.execv(sys.argv[2], sys.argv[2:])")
    with running([sys.executable, "-c", as_systemd, str(sock.fileno()), *serve], sock) as announced:
        assert int(announced.group(2)) == port, "the systemd socket, not --bind, is served"
        assert_serves(port)


def test_port_zero_twice_is_two_listeners_and_tls_names_tcp_ones_https(short_dir: str) -> None:
    specs = binds.resolve_binds(["127.0.0.1:0", "127.0.0.1:0", f"unix:{short_dir}/s.sock"], environ={})
    listeners = binds.open_listeners(specs, 16, tls=True)
    try:
        first, second, unix = (listener.name for listener in listeners)
        assert first.startswith("https://127.0.0.1:") and second.startswith("https://127.0.0.1:")
        assert first != second
        assert unix == f"unix:{short_dir}/s.sock" and not listeners[2].tls
    finally:
        binds.close_all(listeners)
