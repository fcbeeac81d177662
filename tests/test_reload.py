"""`--reload`: edit the app's files, get the new answer from the same address.

Each test edits a temporary app and polls the server until it answers with
the new code (bounded); nothing waits a fixed time.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from comparisons.childproc import LISTENING, child_env, read_announcement, stop_child
from flash_green import reload

from .httpclient import Client, build_request
from .serverproc import ROOT, ServerProcess
from .test_cli import wait_for

pytestmark = pytest.mark.timeout(90)

#: Generous for a loaded machine: the reloader looks once per POLL_INTERVAL.
RELOAD_WAIT = 30.0


def app_source(answer: str, prelude: str = "") -> str:
    """An app module answering `answer`, a Python expression of bytes."""
    return (f"{prelude}\n"
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            f"    return [{answer}]\n")


def answer(server: ServerProcess) -> str | None:
    """The body at /, or None while no server answers (between two children)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5) as response:
            return response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def wait_for_answer(server: ServerProcess, expected: str) -> None:
    wait_for(lambda: answer(server) == expected, RELOAD_WAIT,
             what=f"the answer {expected!r}; log:\n{server.log()}")


@pytest.fixture
def reloading(tmp_path):
    """Start `--reload` on a temporary `live.py` answering 'one'."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        (tmp_path / "live.py").write_text(app_source("b'one'"))
        server = ServerProcess("sequential", app="live:app",
                               args=["--chdir", str(tmp_path), "--reload", *args]).start()
        started.append(server)
        wait_for_answer(server, "one")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one process", "workers"])
def test_an_edit_of_the_app_restarts_the_server(reloading, tmp_path, workers):
    server = reloading(*workers)
    (tmp_path / "live.py").write_text(app_source("b'two, longer'"))
    wait_for_answer(server, "two, longer")


def test_an_edit_of_a_module_the_app_imports_restarts_it(reloading, tmp_path):
    (tmp_path / "helper.py").write_text("SUFFIX = b'!'\n")
    server = reloading()
    (tmp_path / "live.py").write_text(app_source("b'one' + SUFFIX", "from helper import SUFFIX"))
    wait_for_answer(server, "one!")
    (tmp_path / "helper.py").write_text("SUFFIX = b'?!'\n")
    wait_for_answer(server, "one?!")


def test_a_syntax_error_keeps_the_old_code_serving_until_the_next_change(reloading, tmp_path):
    server = reloading()
    (tmp_path / "live.py").write_text(app_source("b'two'") + "def broken(:\n")
    wait_for(lambda: "syntax error in" in server.log(), RELOAD_WAIT, what="the syntax error logged")
    assert answer(server) == "one", "the previous code must still serve"
    (tmp_path / "live.py").write_text(app_source("b'three'"))
    wait_for_answer(server, "three")


def test_an_exception_at_import_waits_for_the_next_change(reloading, tmp_path):
    server = reloading()
    (tmp_path / "live.py").write_text(app_source("b'two'", "raise RuntimeError('half-written')"))
    wait_for(lambda: "waiting for a change to try again" in server.log(), RELOAD_WAIT,
             what="the failed load logged")
    assert "RuntimeError: half-written" in server.log()
    (tmp_path / "live.py").write_text(app_source("b'three'"))
    wait_for_answer(server, "three")


def test_an_extra_file_restarts_the_server(reloading, tmp_path):
    (tmp_path / "greeting.txt").write_text("hello")
    server = reloading("--reload-extra-file", "greeting.txt")
    (tmp_path / "live.py").write_text(
        app_source("GREETING.encode()", "import pathlib\nGREETING = pathlib.Path('greeting.txt').read_text()"))
    wait_for_answer(server, "hello")
    (tmp_path / "greeting.txt").write_text("bonjour")
    wait_for_answer(server, "bonjour")


def test_the_child_reports_the_app_files_not_the_libraries(tmp_path, monkeypatch):
    manifest = tmp_path / "imports.json"
    monkeypatch.setenv(reload.MANIFEST_ENV, str(manifest))
    reload.record_imports()
    files = __import__("json").loads(manifest.read_text())
    assert reload.__file__ in files
    assert urllib.request.__file__ not in files and pytest.__file__ not in files


def test_an_edit_of_the_config_file_restarts_the_server(tmp_path):
    (tmp_path / "first.py").write_text(app_source("b'first'"))
    config = tmp_path / "flash.toml"
    config.write_text('max_requests = 0\n')
    server = ServerProcess("sequential", app="first:app",
                           args=["--chdir", str(tmp_path), "--reload", "-c", str(config)]).start()
    try:
        wait_for_answer(server, "first")
        config.write_text('max_requests = 0\naccess_log = "-"\n')
        wait_for(lambda: answer(server) == "first" and '"GET / HTTP/1.1" 200' in server.log(), RELOAD_WAIT,
                 what=f"the access log the new config turned on; log:\n{server.log()}")
    finally:
        server.stop()


def test_an_app_broken_at_start_is_served_once_fixed(tmp_path):
    (tmp_path / "live.py").write_text(app_source("b'one'", "raise RuntimeError('not yet')"))
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flash_green", "serve", "live:app", "--reload",
                                 "--chdir", str(tmp_path), "-b", "127.0.0.1:0"],
                                cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True)
    try:
        wait_for(lambda: "waiting for a change to try again" in log_path.read_text(), RELOAD_WAIT,
                 what="the failed first load logged")
        (tmp_path / "live.py").write_text(app_source("b'fixed'"))
        match, seen = read_announcement(proc, LISTENING, RELOAD_WAIT)
        assert match, f"{seen!r}\n{log_path.read_text()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(2)}/", timeout=10) as response:
            assert response.read() == b"fixed"
    finally:
        stop_child(proc, 10, session=True)
        proc.stdout.close()


def test_a_client_arriving_while_no_server_runs_waits_and_is_answered(reloading, tmp_path):
    """The reloader holds the listening socket across restarts: a client that
    connects while the app cannot load is queued, not refused, and the next
    child that loads answers it."""
    server = reloading()
    (tmp_path / "live.py").write_text(app_source("b'never'", "raise RuntimeError('broken on purpose')"))
    wait_for(lambda: "waiting for a change" in server.log(), RELOAD_WAIT, what="the failed load")
    with Client(("127.0.0.1", server.port), timeout=RELOAD_WAIT) as client:
        client.send(build_request("GET", "/", headers={"Connection": "close"}))
        (tmp_path / "live.py").write_text(app_source("b'fixed'"))
        assert client.read_response().body == b"fixed"


def test_reload_with_reuse_port_is_refused_in_one_line(tmp_path):
    (tmp_path / "live.py").write_text(app_source("b'one'"))
    done = subprocess.run([sys.executable, "-m", "flash_green", "serve", "live:app", "--chdir", str(tmp_path),
                           "--reload", "--reuse-port", "-b", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, env=child_env())
    assert done.returncode == 2 and "--reuse-port" in done.stderr and "Traceback" not in done.stderr
