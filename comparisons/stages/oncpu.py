"""On-CPU samples by `perf`: how a server's CPU divides between Python and the kernel's recv, send and poll.

`perf record -e cpu-clock -g` samples a task only while it runs on a CPU,
so its shares are shares of CPU time, whatever the neighbours do (py-spy
samples a thread whenever it is runnable, so a server woken from
epoll_wait or recv but kept waiting for the CPU by a neighbour is sampled
at that line: on a shared machine that inflates the blocking calls). Each
sample's kernel call chain names its syscall:

* `__x64_sys_sendto`, `sendmsg`, `write`, `writev`           -> send
* `__x64_sys_recvfrom`, `recvmsg`, `read`, `readv`            -> recv
* `__x64_sys_epoll_wait`, `epoll_pwait`, `poll`, `select`...  -> poll
* any other kernel sample (interrupts, page faults, futex...) -> kernel
* a sample in user space                                      -> python

(`read`/`write` are counted as I/O: the engines use them on sockets only,
and the waker's eventfd is rare.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field

from .recorder import Recorder

PARTS = ("python", "recv", "send", "poll", "kernel")

_SYSCALL = re.compile(r"__(?:x64|ia32|arm64)_sys_(\w+)")
_SYSCALL_PART = {
    "sendto": "send", "sendmsg": "send", "write": "send", "writev": "send",
    "recvfrom": "recv", "recvmsg": "recv", "read": "recv", "readv": "recv",
    "epoll_wait": "poll", "epoll_pwait": "poll", "epoll_pwait2": "poll", "poll": "poll",
    "ppoll": "poll", "select": "poll", "pselect6": "poll",
}
_KERNEL_ADDRESS = re.compile(r"^\s*ffffffff[0-9a-f]{8}\s")


@dataclass
class CpuSamples:
    #: `perf script` output, kept for a second look.
    raw: str = ""
    samples: int = 0
    parts: Counter = field(default_factory=Counter)

    def share(self, part: str) -> float:
        return self.parts[part] / self.samples if self.samples else 0.0


def part_of(block: list[str]) -> str:
    """The part of one sample: its frames as `perf script -F ip,sym` prints them, innermost first."""
    if not block or not _KERNEL_ADDRESS.match(block[0]):
        return "python"
    for line in block:
        match = _SYSCALL.search(line)
        if match:
            return _SYSCALL_PART.get(match.group(1), "kernel")
    return "kernel"


def read_script(text: str) -> CpuSamples:
    """CpuSamples from `perf script -F ip,sym` output (samples separated by blank lines)."""
    result = CpuSamples(raw=text)
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            block.append(line)
        elif block:
            result.samples += 1
            result.parts[part_of(block)] += 1
            block = []
    return result


def available() -> bool:
    return shutil.which("perf") is not None


def record(pids: list[int], seconds: int, cpu: int | None) -> Recorder:
    """Start `perf record` on `pids` (all their threads) for `seconds`; `collect` it afterwards."""
    def argv(path: str) -> list[str]:
        return ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g",
                "-p", ",".join(map(str, pids)), "-o", path, "--", "sleep", str(seconds)]
    return Recorder.start("perf record", argv, cpu)


def collect(recorder: Recorder, timeout: float) -> CpuSamples:
    def read(path: str) -> CpuSamples:
        return read_script(subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"], capture_output=True,
                                          text=True, timeout=timeout, check=True).stdout)
    return recorder.finish(timeout, read)
