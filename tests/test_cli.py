"""Operating `serve` as one operates gunicorn: version, errors, config layers, paths, logging.

Every operator mistake must end in one line naming the problem and a
non-zero exit; settings come from the command line over FLASH_CMD_ARGS over
a config file; Flash logs through its own loggers, never the app's root.
"""

from __future__ import annotations

import importlib.metadata
import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from comparisons.childproc import LISTENING, child_env, read_announcement, stop_child
from flash_green import cli, settings

from .serverproc import ROOT, ServerProcess

pytestmark = pytest.mark.timeout(60)

APP_MODULE = '''
def create_app(name="default", n=0):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{name} {n}".encode()]
    return app

application = create_app("plain")
value = 3
'''


def run_cli(*args: str, cwd: str = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flash_green", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30, env={**child_env(), **(env or {})})


def get(server: ServerProcess, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
        return response.read().decode()


def wait_for(condition, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "myapp.py").write_text(APP_MODULE)
    (tmp_path / "broken.py").write_text("import os\nraise RuntimeError('boom at import')\n")
    (tmp_path / "needs_missing.py").write_text("import no_such_dependency\n")
    return tmp_path


def test_version_comes_from_the_package_metadata():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip().startswith(f"flash-green {importlib.metadata.version('flash-green')}")


# -- one line per mistake ---------------------------------------------------------

@pytest.mark.parametrize("spec, words", [
    ("no_such_module:app", "cannot import 'no_such_module': no such module"),
    ("myapp:nope", "module 'myapp' has no attribute 'nope'"),
    ("myapp:value", "'myapp:value' is not callable"),
    ("broken:app", "RuntimeError: boom at import"),
    ("needs_missing:app", "No module named 'no_such_dependency'"),
    ("myapp:create_app(", "neither a name nor a call"),
    ("myapp:create_app(os.environ)", "must be literals"),
    ("myapp:create_app(1, 2, 3)", "factory 'myapp:create_app(1, 2, 3)' failed: TypeError"),
])
def test_app_load_errors_are_one_line_and_exit_4(app_dir, spec, words):
    proc = run_cli("serve", spec, "--chdir", str(app_dir), "-b", "127.0.0.1:0")
    assert proc.returncode == cli.EXIT_APP_LOAD
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("flash: "), proc.stderr
    assert words in proc.stderr


def test_an_exception_at_import_names_its_file_and_line(app_dir):
    proc = run_cli("serve", "broken:app", "--chdir", str(app_dir), "-b", "127.0.0.1:0")
    assert f"{app_dir / 'broken.py'}, line 2" in proc.stderr


@pytest.fixture
def port_in_use():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("bind, code, words", [
    ("127.0.0.1:http", 1, "the port must be a number from 0 to 65535"),
    ("127.0.0.1:99999", 1, "the port must be a number from 0 to 65535"),
    ("no-such-host.invalid:8000", 1, "unknown host"),
    ("in-use", 1, "already in use"),
])
def test_bind_errors_are_one_line(port_in_use, workers, bind, code, words):
    bind = f"127.0.0.1:{port_in_use}" if bind == "in-use" else bind
    proc = run_cli("serve", "-b", bind, "--workers", workers)
    assert proc.returncode == code
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("flash: "), proc.stderr
    assert words in proc.stderr


# -- factory calls, --chdir, --pythonpath ------------------------------------------

@pytest.mark.parametrize("spec, answer", [
    ("myapp:create_app()", "default 0"),
    ("myapp:create_app('x', n=2)", "x 2"),
    ("myapp", "plain 0"),
])
def test_factory_call_syntax_as_gunicorn_accepts(app_dir, spec, answer):
    server = ServerProcess("sequential", app=spec, args=["--chdir", str(app_dir)]).start()
    try:
        assert get(server) == answer
    finally:
        server.stop()


def test_pythonpath_puts_directories_first_on_sys_path(app_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    server = ServerProcess("sequential", app="myapp:create_app('from pythonpath')",
                           args=["--pythonpath", f"{elsewhere},{app_dir}"]).start()
    try:
        assert get(server) == "from pythonpath 0"
    finally:
        server.stop()


# -- config file, FLASH_CMD_ARGS, command line --------------------------------------

def serve_parser():
    parser = cli.argparse.ArgumentParser(prog="serve")
    cli.add_serve_arguments(parser)
    return parser


PY_CONFIG = '''
import os
keep_alive = 7.0
max_requests = 3
backlog = 5
reload_extra_file = ["from-file"]
_private = "ignored"
'''
TOML_CONFIG = '''
keep-alive = 7.0
max_requests = 3
backlog = 5
reload_extra_file = ["from-file"]
'''


@pytest.mark.parametrize("name, text", [("flash.conf.py", PY_CONFIG), ("flash.toml", TOML_CONFIG)])
def test_command_line_beats_environment_beats_file_beats_defaults(tmp_path, monkeypatch, name, text):
    path = tmp_path / name
    path.write_text(text)
    monkeypatch.setenv(settings.ENV_ARGS, "--keep-alive 8 --backlog 9")
    args = settings.resolve(serve_parser(), ["-c", str(path), "--backlog", "10"])
    assert args.backlog == 10           # command line over environment over file
    assert args.keep_alive == 8.0       # environment over file
    assert args.max_requests == 3       # file over default
    assert args.workers == 0            # default
    assert args.reload_extra_file == ["from-file"]
    args = settings.resolve(serve_parser(), ["-c", str(path), "--reload-extra-file", "cli"])
    assert args.reload_extra_file == ["cli"], "a list given on the command line replaces the file's"


def test_config_file_named_in_the_environment(tmp_path, monkeypatch):
    (tmp_path / "c.toml").write_text("max_requests = 11\n")
    monkeypatch.setenv(settings.ENV_ARGS, f"-c {tmp_path / 'c.toml'}")
    assert settings.resolve(serve_parser(), []).max_requests == 11


@pytest.mark.parametrize("name, text, words", [
    ("c.toml", "wrkers = 2\n", "unknown setting 'wrkers' (did you mean 'workers'?)"),
    ("c.py", "def on_starting(server):\n    pass\n", "unknown setting 'on_starting'"),
    ("c.toml", 'workers = "many"\n', "invalid int value: 'many'"),
    ("c.toml", "patch = 1\n", "patch takes true or false"),
    ("c.py", "workers = (\n", "line 1"),
    ("c.toml", "workers = \n", "c.toml"),
])
def test_config_file_mistakes_are_one_line(tmp_path, capsys, name, text, words):
    (tmp_path / name).write_text(text)
    assert cli.main(["serve", "-c", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flash: ") and words in err, err


def test_environment_mistakes_are_one_line(monkeypatch, capsys):
    monkeypatch.setenv(settings.ENV_ARGS, "--workers 'two")
    assert cli.main(["serve"]) == 2
    assert capsys.readouterr().err == f"flash: {settings.ENV_ARGS}: No closing quotation\n"
    monkeypatch.setenv(settings.ENV_ARGS, "--wrkers 2")
    assert cli.main(["serve"]) == 2
    assert "unrecognized arguments: --wrkers" in capsys.readouterr().err


def test_a_config_file_names_the_app_and_the_address(app_dir):
    (app_dir / "flash.toml").write_text('app = "myapp:create_app(\'from toml\')"\nbind = "127.0.0.1:0"\n')
    proc = subprocess.Popen([sys.executable, "-m", "flash_green", "serve", "-c", "flash.toml"],
                            cwd=app_dir, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        match, seen = read_announcement(proc, LISTENING, 30)
        assert match, seen
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(2)}/", timeout=10) as response:
            assert response.read() == b"from toml 0"
    finally:
        stop_child(proc, 10)
        proc.stdout.close()


# -- logging ------------------------------------------------------------------

DJANGO_LIKE = '''
import logging
import logging.config

logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "INFO"}},
})
request_log = logging.getLogger("django.request")


def app(environ, start_response):
    request_log.warning("Not Found: %s", environ["PATH_INFO"])
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
'''


def test_an_app_that_configures_logging_prints_each_record_once(tmp_path):
    (tmp_path / "djangoish.py").write_text(DJANGO_LIKE)
    server = ServerProcess("sequential", app="djangoish:app", args=["--chdir", str(tmp_path)]).start()
    try:
        with pytest.raises(urllib.error.HTTPError):
            get(server, "/nope/")
        wait_for(lambda: "Not Found: /nope/" in server.log(), what="the app's log line")
    finally:
        server.stop()
    assert server.log().count("Not Found: /nope/") == 1, server.log()


LOG_CONFIGS = {
    "json": json.dumps({
        "version": 1,
        "formatters": {"tagged": {"format": "TAGGED %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": "LOGFILE", "formatter": "tagged"}},
        "loggers": {"flash": {"handlers": ["file"], "level": "INFO"}},
    }),
    "toml": textwrap.dedent('''
        version = 1
        [formatters.tagged]
        format = "TAGGED %(name)s %(message)s"
        [handlers.file]
        class = "logging.FileHandler"
        filename = "LOGFILE"
        formatter = "tagged"
        [loggers.flash]
        handlers = ["file"]
        level = "INFO"
    '''),
    "ini": textwrap.dedent('''
        [loggers]
        keys = root,flash
        [handlers]
        keys = file
        [formatters]
        keys = tagged
        [logger_root]
        handlers =
        [logger_flash]
        qualname = flash
        handlers = file
        level = INFO
        [handler_file]
        class = FileHandler
        args = ("LOGFILE",)
        formatter = tagged
        [formatter_tagged]
        format = TAGGED %(name)s %(message)s
    '''),
}


@pytest.mark.parametrize("kind", list(LOG_CONFIGS))
def test_log_config_file_configures_flash_logging(tmp_path, kind):
    log_file = tmp_path / "flash.log"
    config = tmp_path / f"logging.{kind}"
    config.write_text(LOG_CONFIGS[kind].replace("LOGFILE", str(log_file)))
    server = ServerProcess("sequential", args=["--log-config", str(config)]).start()
    try:
        wait_for(lambda: log_file.exists() and "TAGGED flash using engine" in log_file.read_text(),
                 what="the configured log file")
    finally:
        server.stop()


def test_the_default_engine_is_named_in_the_log():
    server = ServerProcess(cli.DEFAULT_ENGINE).start()
    try:
        wait_for(lambda: "using engine sequential (the default" in server.log(), what="the engine line")
    finally:
        server.stop()


def test_patching_reads_flash_cmd_args_before_the_cli_loads(monkeypatch):
    from flash_green import patching

    monkeypatch.setenv(settings.ENV_ARGS, "--engine gevent --patch")
    assert patching.requested(["serve", "app:app"]) == ("gevent", True, 0)
    assert patching.requested(["serve", "--engine", "eventlet"]) == ("eventlet", True, 0), "command line wins"
