"""Slow readers against a thread pool: does a slow download hold a thread?

    python -m comparisons.bench_slow_readers [--engine event] [--readers 8]

`--readers` clients each ask for a 10 MB download and read it at 1 KB/s
(a tiny receive window, 1 KB a second), while `wrk -t1 -c10` asks for `/`
for `--duration` seconds. A model whose pool threads wait in blocking
sends serves nothing else once the readers hold every thread; one with
asynchronous write completion (the event engine) serves on. Loopback only,
bounded by the duration.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import threading

from comparisons.childproc import LISTENING, child_env, read_announcement, stop_child

DOWNLOAD = b"GET /download?bytes=10485760 HTTP/1.1\r\nHost: bench\r\n\r\n"


def read_slowly(address: tuple[str, int], done: threading.Event) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    with sock:
        sock.connect(address)
        sock.sendall(DOWNLOAD)
        while not done.wait(1.0):
            if not sock.recv(1024):
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="event")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args(argv)
    cmd = [sys.executable, "-m", "flash_green", "serve", "flash_green.apps.demo:app",
           "--engine", args.engine, "-b", "127.0.0.1:0", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=child_env(), start_new_session=True)
    done = threading.Event()
    try:
        match, seen = read_announcement(proc, LISTENING, 30)
        if match is None:
            raise RuntimeError(f"{args.engine} did not start: {seen!r}")
        address = ("127.0.0.1", int(match.group(2)))
        readers = [threading.Thread(target=read_slowly, args=(address, done), daemon=True)
                   for _ in range(args.readers)]
        for reader in readers:
            reader.start()
        wrk = subprocess.run(["wrk", "-t1", "-c10", f"-d{args.duration}s", "--timeout", "2s",
                              f"http://{address[0]}:{address[1]}/"],
                             capture_output=True, text=True, timeout=args.duration + 60)
    finally:
        done.set()
        stop_child(proc, 10, session=True)
        proc.stdout.close()
    requests = re.search(r"(\d+) requests in", wrk.stdout)
    errors = re.search(r"Socket errors: .*", wrk.stdout)
    print(f"{args.engine}: {args.readers} readers at 1 KB/s; other clients got "
          f"{requests.group(1) if requests else 0} responses in {args.duration} s"
          f"{' (' + errors.group(0) + ')' if errors else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
