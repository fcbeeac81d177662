"""Real nginx in front of Flash instances, from a config this project writes.

`Nginx` renders `CONFIG_TEMPLATE` into a private directory (pid file, logs
and temp paths all inside it, so it needs no root and touches nothing of
the system's nginx), starts nginx in the foreground as a child process, and
stops it by its PID. The config is the one docs/deploy.md explains:

* the upstream is one or more Flash instances on **unix sockets** (no TCP
  between nginx and the app: no ports, no TIME_WAIT, file permissions);
* `keepalive` + `proxy_http_version 1.1` + an empty `Connection` header
  keep upstream connections open between requests (without them nginx
  opens a new connection per request, as HTTP/1.0);
* X-Forwarded-For/-Proto/-Host/-Port tell Flash what the client sent (a
  unix-socket peer is trusted, see flash_green/proxy.py) and a client's
  own `Forwarded` header is dropped, so it cannot pose as nginx's;
* `proxy_next_upstream error timeout` retries an idempotent request on the
  next instance when one is down or restarting: what makes a rolling
  restart lose nothing.

``python -m comparisons.nginx unix:/run/flash-1.sock unix:/run/flash-2.sock``
prints the config for those sockets.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from .childproc import pin, process_tree, stop_child

log = logging.getLogger(__name__)

#: Where Debian installs it when /usr/sbin is not on PATH.
DEBIAN_NGINX = "/usr/sbin/nginx"

CONFIG_TEMPLATE = """\
# Written by comparisons/nginx.py; explained in docs/deploy.md.
{user}worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;

    upstream flash {{
{servers}
        keepalive {keepalive};
    }}

    server {{
        listen {listen};
{tls}
        location / {{
            proxy_pass http://flash;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header Forwarded "";
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary on PATH, else Debian's /usr/sbin/nginx, else None."""
    found = shutil.which("nginx")
    if found:
        return found
    return DEBIAN_NGINX if os.access(DEBIAN_NGINX, os.X_OK) else None


def unavailable() -> str | None:
    """None if nginx can run here, else one line saying why not."""
    if find_nginx() is None:
        return "nginx is not installed (Debian: apt-get install nginx)"
    return None


def render_config(upstreams: Sequence[str], root: str, listen: str, *, workers: int = 1,
                  keepalive: int = 64, worker_connections: int = 4096,
                  tls: tuple[str, str] | None = None) -> str:
    """The nginx.conf for `upstreams` (`unix:PATH` or `HOST:PORT`), with its files under `root`."""
    # As root, nginx would run its workers as `nobody`, who may not connect
    # to our sockets; as anyone else the directive is ignored with a warning.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    servers = "\n".join(f"        server {upstream} max_fails=0;" for upstream in upstreams)
    tls_lines = ""
    if tls is not None:
        certfile, keyfile = tls
        listen += " ssl"
        tls_lines = f"        ssl_certificate {certfile};\n        ssl_certificate_key {keyfile};\n"
    nofile = min(2 * worker_connections + 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return CONFIG_TEMPLATE.format(user=user, workers=workers, nofile=nofile, root=root,
                                  worker_connections=worker_connections, servers=servers,
                                  keepalive=keepalive, listen=listen, tls=tls_lines)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (nginx binds it a moment later; a clash fails its start loudly)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class NginxFailed(RuntimeError):
    """nginx did not start; the message carries its error log."""


@dataclass
class Nginx:
    """One nginx master (and its workers) in front of `upstreams`, for a ``with`` block."""

    upstreams: list[str]
    workers: int = 1
    keepalive: int = 64
    worker_connections: int = 4096
    tls: tuple[str, str] | None = None
    cpus: Sequence[int] | None = None
    host: str = "127.0.0.1"
    start_timeout: float = 15.0
    port: int = 0
    root: str = ""
    proc: subprocess.Popen | None = None
    _tempdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/"

    def start(self) -> "Nginx":
        binary = find_nginx()
        if binary is None:
            raise NginxFailed(unavailable())
        self._tempdir = tempfile.TemporaryDirectory(prefix="flash-nginx-")
        self.root = self._tempdir.name
        self.port = free_port(self.host)
        config = render_config(self.upstreams, self.root, f"{self.host}:{self.port}", workers=self.workers,
                               keepalive=self.keepalive, worker_connections=self.worker_connections,
                               tls=self.tls)
        conf_path = os.path.join(self.root, "nginx.conf")
        with open(conf_path, "w") as handle:
            handle.write(config)
        self.proc = subprocess.Popen([binary, "-p", self.root, "-c", conf_path, "-e", self.error_log],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        pin(self.proc.pid, self.cpus)  # before it forks its workers: they inherit the affinity
        self._wait_listening()
        log.info("nginx pid %d on port %d in front of %s", self.proc.pid, self.port, ", ".join(self.upstreams))
        return self

    @property
    def error_log(self) -> str:
        return os.path.join(self.root, "error.log")

    def log_tail(self, size: int = 3000) -> str:
        try:
            with open(self.error_log, "rb") as handle:
                return handle.read()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)  # polling a child's start-up, not synchronising with it
        tail = self.log_tail()
        self.stop()
        raise NginxFailed(f"nginx did not start listening on port {self.port}:\n{tail}")

    def processes(self) -> list[psutil.Process]:
        """The master and its workers (for ResourceSampler)."""
        return process_tree(self.proc)

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown) to our master, by its PID; then clean its directory."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_child(proc, 10, session=True)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed_certificate(directory: str) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1 made with the openssl CLI: (certfile, keyfile)."""
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", keyfile, "-out", certfile],
                   check=True, capture_output=True, timeout=60)
    return certfile, keyfile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print the nginx config the scale-out scenario runs")
    parser.add_argument("upstreams", nargs="+", help="unix:PATH (as given to flash's -b) or HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--root", default="/var/lib/flash-nginx", help="pid, log and temp directory")
    args = parser.parse_args(argv)
    sys.stdout.write(render_config(args.upstreams, args.root, args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
