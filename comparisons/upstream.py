"""The slow upstream service of the I/O-bound scenario: a "third-party API" on 127.0.0.1.

The seed's question is what happens when a handler fetches data from another
service over the network. This module is that other service: it accepts a
TCP connection, reads one HTTP/1.0 request whose query says how long to
"think" (``GET /?ms=50``), waits that long without using the CPU, answers a
small body and closes. The demo app's ``/upstream?port=P&ms=N`` endpoint calls
it with a plain blocking socket; how each engine copes with that wait (a
thread blocked, a green thread switched out, the whole loop stalled) is the
scenario.

It is written on asyncio because it is not under test: it has to hold
thousands of slow calls at once for almost no CPU, so that the server under
test, never the upstream, is what the numbers measure.

Run it as ``python -m comparisons.upstream --port 0``; the first line on
stdout is the bound port. ``UpstreamService`` runs it in a subprocess for the
duration of a ``with`` block and pins it away from the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
from typing import Sequence

from comparisons.childproc import HelperService

log = logging.getLogger(__name__)

#: Longest wait a request may ask for (a bound, so a typo cannot hang a run).
MAX_DELAY_MS = 60_000
#: Longest request head we read before answering anyway.
MAX_HEAD = 8192
BODY = b"upstream data\n"
_DELAY = re.compile(rb"[?&]ms=(\d{1,6})(?:[&\s]|$)")


def delay_of(head: bytes) -> float:
    """Seconds to wait for a request head (``ms=N`` in its query; 0 if absent)."""
    first_line = head.split(b"\r\n", 1)[0]
    match = _DELAY.search(first_line)
    if not match:
        return 0.0
    return min(int(match.group(1)), MAX_DELAY_MS) / 1000


def response() -> bytes:
    return (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One call: read the head, wait as asked, answer, close."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        await asyncio.sleep(delay_of(head))
        writer.write(response())
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, stop_on_stdin_eof: bool) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=4096, limit=MAX_HEAD)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stopped.set_result, None)
    if stop_on_stdin_eof:
        # The parent holds the other end of our stdin: EOF means it is gone.
        loop.add_reader(sys.stdin.fileno(), lambda: stopped.done() or stopped.set_result(None))
    async with server:
        await stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comparisons.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent gone)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.exit_on_stdin_eof))
    return 0


class UpstreamService(HelperService):
    """The upstream in a subprocess for a ``with`` block; ``cpu`` pins it."""

    module = "comparisons.upstream"
    title = "upstream service"


if __name__ == "__main__":
    sys.exit(main())
