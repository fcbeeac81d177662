"""What the micro-benchmarks are, and what one measurement of them holds.

The benchmarks (their meaning is in the ``comparisons.micro`` docstring),
their units, and ``Measurement``: one benchmark on one runtime at one size,
the samples of its repeats. Children print measurements as JSON; the parent
(``comparisons.internals``) reads them back into this class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import median

#: Deadlines of the timers benchmark are uniform in [0, TIMER_SPREAD) seconds.
TIMER_SPREAD = 0.01
#: The benchmarks, in the order they are run and shown.
BENCHMARKS = ("switch", "spawn", "memory", "timers", "io", "epoll")
UNITS = {
    "switch": "us/switch",
    "spawn": "us/task",
    "memory": "bytes/task",
    "timers": "us/timer",
    "io": "us/round trip",
    "epoll": "us/wait",
}
#: How many task hand-overs one unit of each calibrated benchmark holds.
SWITCHES_PER_ROUND = 2


@dataclass
class Measurement:
    """One benchmark on one runtime at one size: the samples of its repeats."""

    bench: str
    runtime: str
    size: int
    samples: list[float]
    unit: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        self.unit = self.unit or UNITS[self.bench]

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(median=self.median, min=self.low, max=self.high)
        return data
