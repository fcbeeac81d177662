"""The cgi engine with --cgi-dir: shell scripts under fork + exec, and the CGI format.

The server runs on a copy of tests/cgi-bin (plus a symlink that points out of
it, made here). The WSGI gateway (no --cgi-dir) is exercised by the whole
cross-engine suite; this module checks RFC 3875 itself: the meta-variables a
script sees, what a hostile header can and cannot do, path mapping, the
response format, timeouts and reaping.
"""

from __future__ import annotations

import os
import shutil
import socket

import psutil
import pytest

from flash_green.cgi import (CGIResponseError, child_environment, gateway_environ,
                             meta_variables, parse_response_head)
from flash_green.http import END, ServerConnection
from flash_green.wsgi import InputStream, WSGIContext, peer_keys

from .conftest import Target, start_server
from .httpclient import Client, build_request, chunked

pytestmark = pytest.mark.timeout(60)

CGI_BIN = os.path.join(os.path.dirname(__file__), "cgi-bin")


@pytest.fixture(scope="module")
def cgi_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cgi") / "cgi-bin"
    shutil.copytree(CGI_BIN, path, symlinks=True)
    (path / "escape.sh").symlink_to("/bin/sh")  # executable, but outside the dir
    (path / "alias.sh").symlink_to(path / "hello.sh")  # a link that stays inside
    return str(path)


@pytest.fixture(scope="module")
def server(cgi_dir, hold_dir):
    proc = start_server(Target("cgi"), hold_dir, "--cgi-dir", cgi_dir, "--timeout", "2")
    yield proc
    assert proc.stop() == 0, proc.log()


def get(server, path: str, **kw):
    with Client(server.address) as c:
        return c.request("GET", path, **kw)


def script_env(server, path: str = "/env.sh", method: str = "GET", body: bytes = b"",
               headers: dict | None = None) -> dict[str, str]:
    with Client(server.address) as c:
        resp = c.request(method, path, body, headers)
    assert resp.status == 200, resp
    return dict(line.split("=", 1) for line in resp.body.decode("latin-1").splitlines() if "=" in line)


# -- the meta-variables a script sees ------------------------------------------------

def test_rfc3875_meta_variables(server, cgi_dir):
    env = script_env(server, "/env.sh/extra/path?a=1&b=%20two", headers={"X-One": "1"})
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == "a=1&b=%20two"  # as sent: the script decodes it
    assert env["SCRIPT_NAME"] == "/env.sh"
    assert env["PATH_INFO"] == "/extra/path"
    assert env["SCRIPT_FILENAME"] == os.path.join(os.path.realpath(cgi_dir), "env.sh")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_SOFTWARE"] == "flash"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_HOST"] == "127.0.0.1"
    assert env["REMOTE_PORT"].isdigit()
    assert env["REQUEST_URI"] == "/env.sh/extra/path?a=1&b=%20two"
    assert env["HTTP_HOST"] == "localhost" and env["HTTP_X_ONE"] == "1"
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_body_length_and_type_including_chunked(server):
    env = script_env(server, method="POST", body=b"hello", headers={"Content-Type": "text/plain"})
    assert env["CONTENT_LENGTH"] == "5" and env["CONTENT_TYPE"] == "text/plain"
    # RFC 3875 s.4.1.2: set whenever the request has a body, an empty one too.
    assert script_env(server, method="POST", headers={"Content-Length": "0"})["CONTENT_LENGTH"] == "0"
    with Client(server.address) as c:
        c.send(build_request("POST", "/echo.sh", headers={"Transfer-Encoding": "chunked"})
               + chunked(b"hello", b" ", b"chunked"))
        resp = c.read_response()
    assert resp.status == 200 and resp.body == b"hello chunked"


def test_only_the_request_and_path_reach_a_script(server):
    env = script_env(server)
    assert "FLASH_TEST_HOLD_DIR" not in env  # set in the server's own environment
    assert set(env) - {"PATH", "PWD", "SHLVL", "_"} <= {
        "GATEWAY_INTERFACE", "REQUEST_METHOD", "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO",
        "SCRIPT_FILENAME", "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "SERVER_SOFTWARE",
        "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT", "REQUEST_URI", "HTTP_HOST"}


# -- hostile headers -------------------------------------------------------------------

def test_header_values_cannot_inject_commands_or_variables(server, tmp_path):
    marker = tmp_path / "pwned"
    nasty = {
        "X-Cmd": f"$(touch {marker}); `touch {marker}`; touch {marker} | &&",
        "X-Assign": "PATH=/evil LD_PRELOAD=/evil.so",
        "Path": "/evil",                     # becomes HTTP_PATH, never PATH
        "Gateway-Interface": "CGI/9.9",      # becomes HTTP_GATEWAY_INTERFACE
        "Proxy": "http://evil.example:3128",  # httpoxy: no HTTP_PROXY at all
        "Authorization": "Basic c2VjcmV0",   # not for scripts (RFC 3875 s.4.1.18)
        "X-Func": "() { :; }; touch " + str(marker),  # shellshock-style
    }
    env = script_env(server, "/env.awk", headers=nasty)
    assert env["HTTP_X_CMD"] == nasty["X-Cmd"]
    assert env["HTTP_X_ASSIGN"] == nasty["X-Assign"]
    assert env["HTTP_PATH"] == "/evil" and env["PATH"] != "/evil"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1" and env["HTTP_GATEWAY_INTERFACE"] == "CGI/9.9"
    assert "HTTP_PROXY" not in env and "LD_PRELOAD" not in env
    assert "HTTP_AUTHORIZATION" not in env
    assert env["HTTP_X_FUNC"] == nasty["X-Func"]
    assert not marker.exists()


def test_odd_header_names_do_not_become_variables(server):
    env = script_env(server, "/env.awk", headers={"X_Under": "1", "X.Dot": "2", "X~Tilde": "3",
                                                  "X-Fine": "4"})
    assert [k for k in env if k.startswith("HTTP_X")] == ["HTTP_X_FINE"]


def test_non_ascii_header_bytes_reach_the_script_unchanged(server):
    with Client(server.address) as c:
        c.send(b"GET /env.sh HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n")
        resp = c.read_response()
    assert b"HTTP_X_LATIN=caf\xe9\n" in resp.body


# -- mapping URLs to programs --------------------------------------------------------

@pytest.mark.parametrize("path,status", [
    ("/../cgi-bin/hello.sh", 404),
    ("/sub/../hello.sh", 404),
    ("/%2e%2e/etc/passwd", 404),
    ("/escape.sh", 404),            # a symlink out of the dir
    ("/missing.sh", 404),
    ("/sub", 404),                  # a directory
    ("/not-executable.sh", 403),
    ("/hello.sh%00", 400),          # no environment variable can hold a NUL
])
def test_paths_outside_or_unusable_are_refused(server, path, status):
    assert get(server, path).status == status


def test_scripts_in_subdirectories_and_links_inside(server):
    assert get(server, "/sub/hello.sh").body == b"hello from sub"
    assert get(server, "/alias.sh").body == b"Hello, World!"


# -- the CGI response -----------------------------------------------------------------

def test_status_location_and_other_headers(server):
    resp = get(server, "/status.sh")
    assert resp.status == 404 and resp.body == b"not here\n" and resp.header("X-From") == "script"
    resp = get(server, "/redirect.sh")
    assert resp.status == 302 and resp.header("Location") == "http://example.com/elsewhere"
    resp = get(server, "/local-redirect.sh")
    assert resp.status == 200 and resp.body == b"Hello, World!"
    assert get(server, "/loop-redirect.sh").status == 502


@pytest.mark.parametrize("script", ["no-blank-line.sh", "no-output.sh", "bad-header.sh",
                                    "bad-status.sh"])
def test_malformed_cgi_output_is_502(server, script):
    resp = get(server, "/" + script)
    assert resp.status == 502
    assert get(server, "/hello.sh").status == 200


def test_head_request_gets_no_body(server):
    with Client(server.address) as c:
        resp = c.request("HEAD", "/hello.sh")
        assert resp.status == 200 and resp.header("Content-Length") == "13"
        assert c.request("GET", "/hello.sh").body == b"Hello, World!"


def test_a_scripts_exit_status_does_not_spoil_a_complete_response(server):
    resp = get(server, "/fails-after-output.sh")
    assert resp.status == 200 and resp.body == b"ok"


def test_stderr_goes_to_the_server_log(server):
    assert get(server, "/stderr.sh").body == b"ok"
    assert "a line for the server log from stderr.sh" in server.log()


def test_large_body_goes_through_a_spool_file(server):
    payload = os.urandom(300 * 1024)
    with Client(server.address) as c:
        resp = c.request("POST", "/echo.sh", payload)
    assert resp.status == 200 and resp.body == payload


# -- processes ------------------------------------------------------------------------

def test_keep_alive_across_cgi_requests_each_in_a_new_process(server):
    with Client(server.address) as c:
        pids = [c.request("GET", "/pid.sh").body for _ in range(3)]
        local = c.sock.getsockname()
        assert c.request("GET", "/hello.sh").status == 200
        assert c.sock.getsockname() == local  # still the same connection
    assert len(set(pids)) == 3


def _processes_running(argument: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", argument]:
            found.append(proc)
    return found


def test_a_child_past_timeout_is_killed_with_its_own_children(server):
    resp = get(server, "/sleep.sh")
    assert resp.status == 504
    psutil.wait_procs(_processes_running("37"), timeout=5)
    assert not _processes_running("37")


def test_timeout_after_the_head_breaks_the_connection(server):
    with Client(server.address) as c:
        c.send(build_request("GET", "/slow-body.sh"))
        with pytest.raises((EOFError, ConnectionResetError)):
            c.read_response()  # 5 of 100 bytes, then the connection ends
    psutil.wait_procs(_processes_running("38"), timeout=5)
    assert not _processes_running("38")


def test_client_gone_mid_request_and_no_zombies_left(server):
    sock = socket.create_connection(server.address)
    sock.sendall(build_request("GET", "/sleep.sh"))
    sock.close()
    assert get(server, "/hello.sh").status == 200
    server_proc = psutil.Process(server.proc.pid)
    zombies = lambda: [c for c in server_proc.children() if c.status() == psutil.STATUS_ZOMBIE]
    psutil.wait_procs(server_proc.children(), timeout=10)
    assert not zombies()


# -- the CGI format, without processes --------------------------------------------------

def test_parse_response_head():
    head = parse_response_head(b"Status: 201\r\nContent-Type: text/plain\nX-A:  b \r\nDate: x")
    assert head.status == "201 Created"
    assert head.headers == [("Content-Type", "text/plain"), ("X-A", "b")]  # Date is ours
    assert parse_response_head(b"Location: http://x/").status == "302 Found"
    assert parse_response_head(b"Location: /here?x=1").local_redirect == "/here?x=1"
    assert parse_response_head(b"Status: 303 See Other\r\nLocation: /x").local_redirect is None
    for bad in (b"Status: 20", b"Status: 600 Nope", b"X-A: 1\rX", b"No colon", b"A B: c",
                b"Status: 200\nStatus: 200"):
        with pytest.raises(CGIResponseError):
            parse_response_head(bad)


def test_meta_variables_round_trip_to_a_pep3333_environ():
    ctx = WSGIContext(None, "127.0.0.1", 8080)
    environ = dict(ctx.base_environ, REMOTE_ADDR="10.0.0.1", REMOTE_PORT="5555", REQUEST_METHOD="POST",
                   PATH_INFO="/a b", QUERY_STRING="q=%C3%A9", SERVER_PROTOCOL="HTTP/1.1",
                   REQUEST_URI="/app/a%20b?q=%C3%A9", CONTENT_TYPE="text/plain",
                   HTTP_X_LATIN="caf\xe9", HTTP_PROXY="evil", HTTP_COOKIE="a=1; b=2")
    meta = meta_variables(environ, "/app", "/a b", 3)
    variables = child_environment(meta, {b"HTTP_X_STALE": b"1", b"PATH_INFO": b"/stale",
                                         b"HOME": b"/root"})
    assert variables[b"HTTP_X_LATIN"] == b"caf\xe9" and b"HTTP_X_STALE" not in variables
    assert variables[b"PATH_INFO"] == b"/a b" and variables[b"HOME"] == b"/root"
    assert b"HTTP_PROXY" not in variables
    rebuilt = gateway_environ(WSGIContext(None, "127.0.0.1", 8080),
                              {k.decode("latin-1"): v.decode("latin-1") for k, v in variables.items()},
                              stdin_fd=-1)
    for key in ("REQUEST_METHOD", "QUERY_STRING", "CONTENT_TYPE", "HTTP_X_LATIN", "HTTP_COOKIE",
                "SERVER_PROTOCOL", "REMOTE_ADDR"):
        assert rebuilt[key] == environ[key], key
    assert (rebuilt["SCRIPT_NAME"], rebuilt["PATH_INFO"], rebuilt["CONTENT_LENGTH"]) == ("/app", "/a b", "3")
    assert rebuilt["wsgi.run_once"] is True and rebuilt["wsgi.version"] == (1, 0)


@pytest.mark.parametrize("raw", [
    b"GET /a%20b/caf%C3%A9?q=%20 HTTP/1.1\r\nHost: h\r\nX.Dotted: 1\r\nAuthorization: Basic eA==\r\n"
    b"Cookie: a=1\r\nCookie: b=2\r\nX-Latin: caf\xe9\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n",
], ids=["headers", "empty-post", "chunked", "https"])
def test_the_gateway_gives_the_app_the_in_process_environ(raw):
    conn = ServerConnection()
    conn.receive_data(raw)
    request = conn.next_event()
    ctx = WSGIContext(None, "127.0.0.1", 8080)
    body = b"".join(e for e in iter(conn.next_event, END) if type(e) is bytes)
    in_process = ctx.environ(peer_keys(("10.0.0.1", 5555)), request, InputStream(None))
    if "HTTP_X_FORWARDED_PROTO" in in_process:  # what flash_green.proxy makes of it, when trusted
        in_process["wsgi.url_scheme"] = "https"
    meta = meta_variables(in_process, "", in_process["PATH_INFO"], len(body), all_headers=True)
    variables = child_environment(meta, {b"HOME": b"/root", b"APP_SETTING": b"x"})
    gateway = gateway_environ(WSGIContext(None, "127.0.0.1", 8080),
                              {k.decode("latin-1"): v.decode("latin-1") for k, v in variables.items()},
                              stdin_fd=-1)
    for key in ("wsgi.input", "wsgi.run_once", "wsgi.multiprocess"):
        del in_process[key], gateway[key]
    assert gateway == dict(in_process, GATEWAY_INTERFACE="CGI/1.1", REMOTE_HOST="10.0.0.1")
