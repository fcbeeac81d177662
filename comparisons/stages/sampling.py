"""Where a server's Python time goes: py-spy samples, sorted into the stages of a request.

`record` runs `py-spy record --gil --format raw` on the server's process (and
its children, for the supervised engines) while wrk loads it: a sample is
taken of the thread holding the GIL, so each sample is a moment of Python
running (the syscalls release the GIL: `oncpu` counts them with perf).
`classify` gives every sample one stage, walking its stack from the
innermost frame out:

* a frame of the HTTP core, the WSGI adapter or the demo app names the stage
  (`STAGE_OF`): the parser is "parse", `build_head` and the date "head",
  `WSGIContext.environ` and the proxy hook "environ", `Exchange` and the app
  "app". Library code they call (urllib's unquote) counts to them;
* a socket call counts as "recv" or "send" when the innermost frame's line
  makes it (py-spy shows the Python line running a C call), or when the
  frames inside it are only socket wrappers (gevent's, eventlet's, asyncio's
  transport, our green hub's): a green socket's send is a send;
* everything else is "scheduling": the loop, epoll_wait returning events,
  the kernel's resume path, callbacks, counters, timers. Its "poll" part
  (lines calling poll/select) is reported on its own as well.

A stage's share of these samples times the Python part of the server's CPU
per request is its Python microseconds per request; the sampling error of a
share is binomial, sqrt(p(1-p)/n), and is reported with it.
"""

from __future__ import annotations

import linecache
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field

from comparisons.childproc import ROOT

from .recorder import Recorder

STAGES = ("parse", "environ", "app", "head", "recv", "send", "scheduling")

#: (path suffix, function prefix or "") -> stage; the first match wins.
STAGE_OF: tuple[tuple[str, str, str], ...] = (
    ("flash_green/http/connection.py", "ServerConnection.respond", "head"),
    ("flash_green/http/response.py", "", "head"),
    ("flash_green/http/dates.py", "", "head"),
    ("flash_green/http/", "", "parse"),
    ("flash_green/wsgi.py", "WSGIContext.", "environ"),
    ("flash_green/wsgi.py", "_environ_key", "environ"),
    ("flash_green/wsgi.py", "InputStream.__init__", "environ"),
    ("flash_green/wsgi.py", "body_from_pieces", "environ"),
    ("flash_green/wsgi.py", "input_from_pieces", "environ"),
    ("flash_green/wsgi.py", "add_request_keys", "environ"),
    ("flash_green/proxy.py", "", "environ"),
    ("flash_green/wsgi.py", "", "app"),
    ("flash_green/apps/", "", "app"),
)

#: Files whose frames only wrap a socket call for the code above them.
SOCKET_WRAPPERS = ("/socket.py", "/selectors.py", "/selector_events.py", "/transports.py", "gevent/",
                   "eventlet/", "greenhub/", "tasklets/io.py")

#: A socket call on a line; a generator's or coroutine's send() is a resume.
_SEND = re.compile(r"(?<!gen\.)(?<!coro\.)\b(send|sendall|sendmsg|write|writelines)\s*\(")
_RECV = re.compile(r"\b(recv|recv_into|recvfrom|read|readinto)\s*\(")
_POLL = re.compile(r"\b(poll|select|epoll_wait)\s*\(")
#: `function (path:line)`, py-spy's frame format.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    path: str
    line: int

    @classmethod
    def parse(cls, text: str) -> Frame:
        match = _FRAME.match(text)
        if match is None:
            return cls(text, "", 0)
        return cls(match["function"], match["path"], int(match["line"]))

    def source(self) -> str:
        path = self.path if os.path.isabs(self.path) else os.path.join(ROOT, self.path)
        return linecache.getline(path, self.line)


def stage_of(frame: Frame) -> str | None:
    for suffix, function, stage in STAGE_OF:
        if suffix in frame.path and frame.function.startswith(function):
            return stage
    return None


def is_wrapper(frame: Frame) -> bool:
    return any(part in frame.path for part in SOCKET_WRAPPERS)


def io_of(frame: Frame) -> str | None:
    """'recv', 'send' or 'poll' if this frame's line makes that call."""
    line = frame.source()
    for name, pattern in (("send", _SEND), ("recv", _RECV), ("poll", _POLL)):
        if pattern.search(line):
            return name
    return None


def classify(frames: list[Frame]) -> str:
    """The stage of one sample (frames from the outermost to the innermost);
    'poll' is a part of scheduling, kept apart for the report."""
    inside_wrappers = True
    for frame in reversed(frames):
        stage = stage_of(frame)
        if stage is not None:
            return stage
        if inside_wrappers:
            io = io_of(frame)
            if io is not None:
                return io
            inside_wrappers = is_wrapper(frame)
    return "scheduling"


@dataclass
class Profile:
    """The samples of one server under load, sorted."""

    #: py-spy's output, kept for a second look.
    raw: str = ""
    samples: int = 0
    #: stage (and "poll") -> samples
    stages: Counter = field(default_factory=Counter)
    #: (stage, innermost function and its file) -> samples (self time)
    functions: Counter = field(default_factory=Counter)
    #: (stage, innermost function, file and line) -> samples
    lines: Counter = field(default_factory=Counter)

    def add(self, frames: list[Frame], count: int) -> None:
        stage = classify(frames)
        self.samples += count
        self.stages[stage] += count
        leaf = frames[-1] if frames else Frame("?", "", 0)
        table_stage = "scheduling" if stage == "poll" else stage
        where = f"{leaf.function} ({os.path.basename(leaf.path)}"
        self.functions[(table_stage, where + ")")] += count
        self.lines[(table_stage, f"{where}:{leaf.line})")] += count

    def share(self, stage: str) -> float:
        if stage == "scheduling":
            count = self.stages["scheduling"] + self.stages["poll"]
        else:
            count = self.stages[stage]
        return count / self.samples if self.samples else 0.0

    def error(self, stage: str) -> float:
        """One binomial standard error of `share(stage)`."""
        p = self.share(stage)
        return math.sqrt(p * (1 - p) / self.samples) if self.samples else 1.0

    def split(self, total_us: float) -> dict[str, float]:
        """Microseconds per request by stage: the shares times `total_us`."""
        return {stage: self.share(stage) * total_us for stage in STAGES}

    def hot(self, total_us: float, by_line: bool = False, limit: int = 40) -> list[tuple[str, float, str]]:
        """The innermost functions (or lines) by self time, in microseconds per request."""
        counter = self.lines if by_line else self.functions
        return [(where, count / self.samples * total_us, stage)
                for (stage, where), count in counter.most_common(limit)]


def read_raw(text: str) -> Profile:
    """A Profile from py-spy's raw (collapsed stacks) output."""
    profile = Profile(raw=text)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [Frame.parse(f) for f in stack.split(";")]
        # --subprocesses prefixes a "process NNN:..." pseudo-frame.
        frames = [f for f in frames if f.path]
        profile.add(frames, int(count))
    return profile


def available() -> bool:
    return shutil.which("py-spy") is not None


def record(pid: int, seconds: int, rate: int, children: bool, cpu: int | None) -> Recorder:
    """Start py-spy on `pid` for `seconds` (pinned to `cpu`, away from the server);
    `collect` its result once the load has run."""
    # --nonblocking: py-spy's default pauses the process for each sample,
    # which wakes a thread sleeping in epoll_wait or recv, and the idle
    # moment is then sampled as work (an idle tasklets server: 43-90 samples
    # in 2 s at 250 Hz, against 0-2 with --nonblocking).
    # --gil: only the thread holding the GIL, i.e. Python running (the
    # syscalls, which release it, are perf's to count: see `oncpu`).
    def argv(path: str) -> list[str]:
        return ["py-spy", "record", "--nonblocking", "--gil", "--pid", str(pid), "--rate", str(rate),
                "--duration", str(seconds), "--format", "raw", "--output", path,
                *(["--subprocesses"] if children else [])]
    return Recorder.start("py-spy", argv, cpu)


def collect(recorder: Recorder, timeout: float) -> Profile:
    def read(path: str) -> Profile:
        with open(path) as f:
            return read_raw(f.read())
    return recorder.finish(timeout, read)
