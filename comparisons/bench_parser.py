"""Parser micro-benchmark: our sans-IO core against h11 and httptools, same run.

    python -m comparisons.bench_parser                # ~1 minute
    python -m comparisons.bench_parser --rounds 3 --quick
    python -m comparisons.bench_parser --instructions # part 2 in instructions, ~1 minute

Part 1 parses a typical browser GET (about 430 bytes, ten fields) and the
valid requests of gunicorn's corpus (`tests/gunicorn_corpus`; only the files all three parsers accept, so that every parser does
the same work). Each parser starts from a fresh connection object and runs
until the end of the message, as a server does for a new request: our
`ServerConnection` up to `END`, h11 up to `EndOfMessage`, httptools (C,
llhttp) with callbacks that collect the target, the fields and the body.

Part 2 is the whole path a hello-world request takes in every engine, in
steady keep-alive state: parse the head, build the WSGI environ, run the
demo app through `Exchange`, frame the response, `start_next_cycle()`. It is
split into its stages so that a regression shows where it happened.

Timing: each case is measured in interleaved rounds (parser A, B, C, then A,
B, C again...), so a noisy neighbour slows all alike; the figure is the
median of the rounds, in microseconds of this process's CPU time per request
(`time.process_time`: time spent descheduled on a busy machine is not
counted), and ratios are taken between medians of the same run. Numbers
depend on the machine: quote ratios.

On a shared machine time per request moves by tens of percent between
runs; `--instructions` counts instead: it runs each stage of part 2 under
valgrind's callgrind N and 5N times (`--repeat N --stage S`, in a child
process) and divides the difference of the two counts by 4N, which leaves
out start-up and imports. The figure repeats to a few instructions, so a
change of 1 % shows.

Our core caches parsed field lines and whole bodyless heads (clients
repeat them), so the browser GET is measured three ways: the same request
repeated (the whole head cached), a new Cookie value each time (a new
head, one line new), and every field line new (nothing cached: the cold
case). The new-line cases cycle through VARIANTS
distinct requests, the same inputs for every parser.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flash_green.apps.demo import app as demo_app
from flash_green.config import Limits
from flash_green.http import END, PAUSED, Request, ServerConnection
from flash_green.wsgi import Exchange, WSGIContext, input_from_pieces, peer_keys

try:
    import h11
except ImportError:  # the comparison is then ours vs httptools only
    h11 = None
try:
    import httptools
except ImportError:
    httptools = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "gunicorn_corpus")

BROWSER_GET = (
    b"GET /search?q=flash+web+server&hl=en HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=4f2a9c1e7b; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"\r\n"
)
HELLO_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"


# -- the corpus -----------------------------------------------------------------------

def http_file_to_bytes(text: bytes) -> bytes:
    """The corpus README's converter: layout newlines out, escapes in."""
    data = text.replace(b"\n", b"")
    data = data.replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\x00").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    data = re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)
    if b"\\" in data:
        raise ValueError("unknown escape left in file")
    return data


def corpus_valid_requests(corpus: str = CORPUS) -> dict[str, bytes]:
    """file -> wire bytes of every `valid` row of EXPECTED.tsv ({} if absent)."""
    path = os.path.join(corpus, "EXPECTED.tsv")
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if line.startswith("#") or len(cols) < 2 or cols[1] != "valid":
                continue
            with open(os.path.join(corpus, cols[0]), "rb") as request:
                out[cols[0]] = http_file_to_bytes(request.read())
    return out


# -- one message, each parser -----------------------------------------------------------

LIMITS = Limits()


def parse_ours(data: bytes) -> int:
    """Parse one message on a fresh connection; return the body size."""
    conn = ServerConnection(LIMITS)
    conn.receive_data(data)
    size = 0
    while True:
        event = conn.next_event()
        if type(event) is bytes:
            size += len(event)
        elif event is END:
            return size
        elif type(event) is not Request:
            raise ValueError(f"incomplete message: {event!r}")


def parse_h11(data: bytes) -> int:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    size = 0
    while True:
        event = conn.next_event()
        if type(event) is h11.Data:
            size += len(event.data)
        elif type(event) is h11.EndOfMessage:
            return size
        elif type(event) is not h11.Request:
            raise ValueError(f"incomplete message: {event!r}")


class _Collector:
    """What a server built on httptools keeps of a request."""

    __slots__ = ("url", "headers", "body", "complete")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def parse_httptools(data: bytes) -> int:
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    parser.feed_data(data)
    parser.get_method()
    if not collector.complete:
        raise ValueError("incomplete message")
    return sum(map(len, collector.body))


def parsers() -> dict[str, Callable[[bytes], int]]:
    found = {"flash": parse_ours}
    if h11 is not None:
        found["h11"] = parse_h11
    if httptools is not None:
        found["httptools"] = parse_httptools
    return found


def accepted_by_all(requests: dict[str, bytes]) -> dict[str, bytes]:
    """The requests every parser parses to the same body size."""
    out = {}
    for name, data in requests.items():
        sizes = set()
        for parse in parsers().values():
            try:
                sizes.add(parse(data))
            except Exception:   # any parser's refusal (each has its own error type)
                sizes.add(None)
        if None not in sizes and len(sizes) == 1:
            out[name] = data
    return out


# -- the hello-world request path --------------------------------------------------------

@dataclass
class HelloPath:
    """One keep-alive connection of an engine, minus the socket."""

    ctx: WSGIContext = field(default_factory=lambda: WSGIContext(demo_app, "127.0.0.1", 8000))
    conn: ServerConnection = field(default_factory=lambda: ServerConnection(LIMITS))
    peer: tuple[str, str] = field(default_factory=lambda: peer_keys(("127.0.0.1", 40000)))

    def parse(self) -> Request:
        conn = self.conn
        conn.receive_data(HELLO_GET)
        request = conn.next_event()
        conn.next_event()   # END
        conn.next_event()   # PAUSED
        conn.start_next_cycle()
        return request

    def environ(self) -> dict:
        return self.ctx.environ(self.peer, self.parse(), input_from_pieces(None))

    def full(self) -> bytes:
        conn = self.conn
        conn.receive_data(HELLO_GET)
        request = conn.next_event()
        environ = self.ctx.environ(self.peer, request, input_from_pieces(None))
        exchange = Exchange(self.ctx, conn, environ)
        out = b"".join(exchange.run())
        if conn.next_event() is not END or conn.next_event() is not PAUSED:
            raise AssertionError("the hello request did not end")
        if not (exchange.keep_alive and conn.start_next_cycle()):
            raise AssertionError("keep-alive lost")
        return out


# -- timing -------------------------------------------------------------------------------

def per_call_us(fn: Callable[[], object], number: int) -> float:
    """CPU time per call: the process's own time, so that other processes on
    a busy machine (when descheduled) do not count; they still cost caches."""
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number * 1e6


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, budget: float) -> dict[str, float]:
    """Median us/call of each case, the cases taking turns in every round.

    `budget` is the seconds one case may take per round (sets the loop count).
    """
    numbers = {}
    for name, fn in cases.items():
        fn()   # warm up (and fail early)
        numbers[name] = max(1, int(budget / max(per_call_us(fn, 200) * 1e-6, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(per_call_us(fn, numbers[name]))
    return {name: statistics.median(values) for name, values in samples.items()}


def corpus_case(parse: Callable[[bytes], int], requests: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        for data in requests:
            parse(data)
    return run


#: Distinct variants per changing-input case: more lines than our core's
#: field-line cache holds, so every variant misses it (the cold case).
VARIANTS = 2048


def browser_get_variants(every_line: bool) -> list[bytes]:
    """The browser GET with a new Cookie value (or every field value new)."""
    lines = BROWSER_GET.split(b"\r\n")[:-2]
    out = []
    for i in range(VARIANTS):
        fields = [line + b";v=%d" % i if every_line or line.startswith(b"Cookie:") else line
                  for line in lines[1:]]
        out.append(b"\r\n".join([lines[0], *fields]) + b"\r\n\r\n")
    return out


def report_parsers(rounds: int, budget: float) -> None:
    found = parsers()
    print(f"Parsing one request on a fresh connection, us/request (median of {rounds} rounds)")
    print(f"{'input':<44}" + "".join(f"{name:>11}" for name in found) + "   flash vs others")
    rows = [
        (f"browser GET ({len(BROWSER_GET)} bytes), repeated", [BROWSER_GET]),
        ("browser GET, a new Cookie value each time", browser_get_variants(False)),
        ("browser GET, every field line new", browser_get_variants(True)),
    ]
    corpus = accepted_by_all(corpus_valid_requests())
    if corpus:
        rows.append((f"corpus valid ({len(corpus)} files, mean)", list(corpus.values())))
    else:
        print(f"(corpus not found at {CORPUS}: browser GET only)")
    for label, requests in rows:
        cases = {name: corpus_case(parse, requests) for name, parse in found.items()}
        result = {name: us / len(requests) for name, us in interleaved(cases, rounds, budget).items()}
        ours = result["flash"]
        ratios = ", ".join(f"{other / ours:.1f}x faster than {name}" if other >= ours
                           else f"{ours / other:.1f}x slower than {name}"
                           for name, other in result.items() if name != "flash")
        print(f"{label:<44}" + "".join(f"{result[name]:>11.2f}" for name in found) + "   " + ratios)


def report_hello_path(rounds: int, budget: float) -> None:
    path = HelloPath()
    cases = {
        "parse (head, END, PAUSED, next cycle)": path.parse,
        "parse + environ": path.environ,
        "parse + environ + Exchange.run()": path.full,
    }
    result = interleaved(cases, rounds, budget)
    print(f"\nThe hello-world request path, keep-alive, us/request (median of {rounds} rounds)")
    previous = 0.0
    for label, us in result.items():
        print(f"{label:<40}{us:>8.2f}   (+{us - previous:.2f})")
        previous = us
    print(f"=> at most {1e6 / result['parse + environ + Exchange.run()']:,.0f} requests/s per core "
          "before any socket I/O")


HELLO_STAGES = ("parse", "environ", "full")
_COLLECTED = re.compile(rb"Collected : (\d+)")


def instructions(stage: str, repeat: int) -> int:
    """Instructions of this process running `stage` `repeat` times (callgrind)."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, "-m", "comparisons.bench_parser", "--repeat", str(repeat), "--stage", stage]
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=ROOT)
    result = subprocess.run(command, capture_output=True, env=env, cwd=ROOT, check=True)
    return int(_COLLECTED.search(result.stderr).group(1))


def report_instructions(repeat: int) -> None:
    print(f"The hello-world request path, instructions per request (callgrind, ({repeat * 5} - {repeat}) runs)")
    previous = 0
    for stage in HELLO_STAGES:
        per_request = (instructions(stage, repeat * 5) - instructions(stage, repeat)) // (repeat * 4)
        print(f"{stage:<10}{per_request:>10,}   (+{per_request - previous:,})")
        previous = per_request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per case")
    parser.add_argument("--quick", action="store_true", help="0.05 s per case per round, not 0.3 s")
    parser.add_argument("--instructions", action="store_true",
                        help="count part 2's instructions per request with callgrind (no timing)")
    parser.add_argument("--repeat", type=int, default=0,
                        help="run one stage of part 2 this many times and exit (what --instructions counts)")
    parser.add_argument("--stage", choices=HELLO_STAGES, default="full")
    args = parser.parse_args(argv)
    if args.repeat:
        run = getattr(HelloPath(), args.stage)
        for _ in range(args.repeat):
            run()
        return 0
    if args.instructions:
        if shutil.which("valgrind") is None:
            parser.error("--instructions needs valgrind")
        report_instructions(1000)
        return 0
    budget = 0.05 if args.quick else 0.3
    print(f"Python {sys.version.split()[0]}; h11 {getattr(h11, '__version__', 'absent')}; "
          f"httptools {getattr(httptools, '__version__', 'absent')}\n")
    report_parsers(args.rounds, budget)
    report_hello_path(args.rounds, budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
