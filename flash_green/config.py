"""Every knob of the server in one place.

`Limits` bounds what a client may send (the protocol core enforces them);
`Config` adds where to listen, how long to wait and how many workers and
threads to use. The CLI fills a `Config`; tests and benchmarks build one
directly. Defaults are documented next to each field and in the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .http.limits import Limits


@dataclass
class Config:
    """Everything an engine needs to know besides the app itself."""

    #: Where to listen, each in gunicorn's forms (`flash_green/binds.py`):
    #: HOST:PORT, [::1]:PORT, HOST (port 8000), unix:PATH, fd://N. Port 0
    #: picks a free port (printed at start-up). systemd socket activation
    #: (LISTEN_FDS) replaces these.
    bind: list[str] = field(default_factory=lambda: ["127.0.0.1:8000"])
    #: Permission bits of a unix socket file (None: as the umask leaves them).
    #: Connecting needs write permission, e.g. 0o660 for a front end in the
    #: socket's group.
    unix_socket_mode: int | None = None
    #: listen() backlog.
    backlog: int = 2048
    #: Worker processes under the supervisor; 0 = serve in this process.
    workers: int = 0
    #: Threads per process for engines that use a pool (event, worker).
    threads: int = 0
    #: Seconds an idle keep-alive connection is kept open.
    keep_alive: float = 5.0
    #: Seconds a client has to deliver a whole request head, from its first
    #: byte to its blank line (not reset by progress: a client trickling a
    #: byte at a time is cut off too); then 408 and close.
    header_timeout: float = 10.0
    #: Seconds a request body may go without a byte: the wait between two
    #: successive reads, reset by every piece that arrives (nginx's
    #: client_body_timeout); then 408 (if no response began) and close.
    body_timeout: float = 20.0
    #: Slowest upload accepted, in bytes per second (0 = no floor). An upload
    #: may take --body-timeout seconds plus one second per this many bytes
    #: received (Apache mod_reqtimeout's MinRate), checked as bytes arrive,
    #: so a body trickled just fast enough to beat --body-timeout still ends
    #: in a 408. The clock starts at the first wait for body bytes.
    min_body_rate: float = 500.0
    #: Seconds a request may run in the app under --workers (the worker's
    #: heartbeat: the stuck request gets a 500, the worker is replaced); also
    #: the time a CGI child may run, and a write may wait for the client.
    timeout: float = 30.0
    #: Seconds in-flight requests get to finish after SIGTERM.
    graceful_timeout: float = 30.0
    #: Most connections served at once by one process (engines that bound it).
    max_connections: int = 10000
    #: Stop after this many requests (0 = never), plus up to the jitter: a
    #: worker is replaced by its master, a server without workers exits 0.
    max_requests: int = 0
    max_requests_jitter: int = 0
    #: Each worker binds its own SO_REUSEPORT socket instead of inheriting one.
    reuse_port: bool = False
    #: Peers whose X-Forwarded-* and Forwarded headers are believed: a comma
    #: list of addresses and CIDR networks, "*" for every peer, "" for none.
    #: Unix-socket peers are always trusted (`flash_green/proxy.py`).
    forwarded_allow_ips: str = "127.0.0.1,::1"
    #: TLS (`flash_green/tls.py`): the certificate chain (PEM) every TCP
    #: listener presents; None = plain HTTP. A unix socket is never TLS.
    certfile: str | None = None
    #: Its private key (None: it is in `certfile`).
    keyfile: str | None = None
    #: CA certificates (PEM) that client certificates are checked against.
    ca_certs: str | None = None
    #: Client certificates: 0 not asked for, 1 optional (checked if sent),
    #: 2 required (gunicorn's --cert-reqs, the values of ssl.CERT_*).
    cert_reqs: int = 0
    #: OpenSSL cipher list for TLS 1.2 and older (None: OpenSSL's defaults;
    #: TLS 1.3 suites are not chosen this way).
    ciphers: str | None = None
    #: Access log destination: None (off), "-" (stderr) or a file path.
    access_log: str | None = None
    log_level: str = "info"
    #: Log the engine's counters every N seconds (0 = off).
    stats_interval: float = 0.0
    #: Serve the counters as JSON at this path on the same listener (off if None).
    stats_path: str | None = None
    #: Warn with a stack when a single-threaded loop is held longer (ms, 0 = off).
    debug_blocking_ms: float = 0.0
    #: tasklets engine: log every trap ("traps"), every resumption ("sched")
    #: or both ("all") at DEBUG on the `tasklets` logger (None = off).
    trace: str | None = None
    #: Append a JSON line per answered request to this file: who served it,
    #: when (`flash_green.tracing`; None = off).
    trace_requests: str | None = None
    #: Monkey-patch the standard library (gevent, eventlet engines).
    patch: bool = False
    #: Run the asyncio engine on uvloop (also FLASH_UVLOOP=1).
    uvloop: bool = False
    #: Directory of CGI programs (cgi engine); None runs the WSGI app via CGI.
    cgi_dir: str | None = None
    #: The app as named on the command line (`module:callable`) and whether it
    #: is a factory: the cgi engine's gateway loads it again in each child.
    app: str = ""
    factory: bool = False
    #: Value of the Server response header.
    server_header: str = "flash"
    limits: Limits = field(default_factory=Limits)
