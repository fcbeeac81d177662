"""A small HDR-style latency histogram: log-linear buckets, mergeable, cheap to record.

Why not keep every latency sample? At 50k requests per second a 30 s run makes
1.5 million floats per process, and merging the processes of a multi-process
run would mean shipping all of them. A histogram keeps a fixed, small array
of counters instead, and two histograms merge by adding the arrays.

Why log-linear buckets? Latencies span five or more orders of magnitude (tens
of microseconds to seconds). Equal-width buckets would either be too coarse
for the fast requests or need millions of counters for the slow ones. Like
Gil Tene's HdrHistogram we split the value range into powers of two ("shifts")
and each power of two into ``2 ** (precision_bits - 1)`` equal sub-buckets, so
every bucket is at most ``1 / 2 ** (precision_bits - 1)`` of its value wide:
with the default 8 bits that is a relative error under 0.8 % at any scale.

Values are integers in microseconds. The index of a value ``v`` is::

    shift = max(0, v.bit_length() - precision_bits)
    index = (shift << (precision_bits - 1)) + (v >> shift)

Values below ``2 ** precision_bits`` get an exact bucket each (``shift = 0``);
above that, each doubling of the value adds ``2 ** (precision_bits - 1)``
buckets. The formula is two integer operations, which matters because the
load generator records on its hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

#: The percentiles every summary reports, as (label, percent) pairs.
SUMMARY_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)

#: Largest recordable value: about 19 hours in microseconds. Anything larger is
#: clamped, which keeps the counter array at a fixed, small size.
MAX_TRACKABLE_US = (1 << 36) - 1


@dataclass
class Histogram:
    """Counts of integer microsecond values in log-linear buckets.

    ``record()`` is the hot-path call; ``percentile()``, ``mean`` and
    ``summary_ms()`` are for reporting; ``merge()`` and ``to_dict()`` /
    ``from_dict()`` exist so that the per-process histograms of a
    multi-process run can be sent to the parent and combined exactly.
    """

    precision_bits: int = 8
    total: int = 0
    sum_us: int = 0
    min_us: int = MAX_TRACKABLE_US
    max_us: int = 0
    counts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not 2 <= self.precision_bits <= 16:
            raise ValueError("precision_bits must be between 2 and 16")
        size = self._index(MAX_TRACKABLE_US) + 1
        if not self.counts:
            self.counts = [0] * size
        elif len(self.counts) != size:
            raise ValueError("counts array does not match precision_bits")

    # -- recording -------------------------------------------------------

    def _index(self, value: int) -> int:
        shift = value.bit_length() - self.precision_bits
        if shift < 0:
            shift = 0
        return (shift << (self.precision_bits - 1)) + (value >> shift)

    def record(self, value_us: int, count: int = 1) -> None:
        """Add ``count`` observations of ``value_us`` microseconds.

        Negative values (a clock read in the wrong order) count as 0 and huge
        ones are clamped, so a bad sample never raises on the hot path.
        """
        if value_us < 0:
            value_us = 0
        elif value_us > MAX_TRACKABLE_US:
            value_us = MAX_TRACKABLE_US
        bits = self.precision_bits
        shift = value_us.bit_length() - bits
        if shift < 0:
            shift = 0
        self.counts[(shift << (bits - 1)) + (value_us >> shift)] += count
        self.total += count
        self.sum_us += value_us * count
        if value_us > self.max_us:
            self.max_us = value_us
        if value_us < self.min_us:
            self.min_us = value_us

    def record_seconds(self, seconds: float, count: int = 1) -> None:
        """Convenience for callers that measure with ``time.perf_counter()``."""
        self.record(int(seconds * 1_000_000), count)

    # -- combining -------------------------------------------------------

    def merge(self, other: "Histogram") -> "Histogram":
        """Add ``other``'s observations into this histogram (in place) and return it."""
        if other.precision_bits != self.precision_bits:
            raise ValueError("cannot merge histograms of different precision")
        mine = self.counts
        for index, count in enumerate(other.counts):
            if count:
                mine[index] += count
        self.total += other.total
        self.sum_us += other.sum_us
        self.max_us = max(self.max_us, other.max_us)
        self.min_us = min(self.min_us, other.min_us)
        return self

    @classmethod
    def merged(cls, histograms: Iterable["Histogram"]) -> "Histogram":
        """A new histogram holding the observations of all ``histograms``."""
        result: Histogram | None = None
        for hist in histograms:
            if result is None:
                result = cls(precision_bits=hist.precision_bits)
            result.merge(hist)
        return result if result is not None else cls()

    # -- reading ---------------------------------------------------------

    def _bucket_high(self, index: int) -> int:
        """The largest value that lands in bucket ``index`` (HDR's "highest equivalent")."""
        half_bits = self.precision_bits - 1
        shift = (index >> half_bits) - 1
        if shift < 0:
            shift = 0
        sub = index - (shift << half_bits)
        return ((sub + 1) << shift) - 1

    def percentile(self, percent: float) -> int:
        """The value (µs) at or below which ``percent`` % of observations fall.

        Reports the top of the bucket, clamped to the exact min and max seen,
        so ``percentile(100) == max_us`` and results never decrease as
        ``percent`` grows. An empty histogram reports 0.
        """
        if self.total == 0:
            return 0
        if not 0.0 <= percent <= 100.0:
            raise ValueError("percent must be within [0, 100]")
        # The rank of the wanted observation (1-based); at least the first one.
        # Rounding first stops float noise (99.99 / 100 * 20000 is not quite
        # 19998) from pushing the rank one observation too far.
        rank = max(1, math.ceil(round(percent / 100.0 * self.total, 6)))
        seen = 0
        for index, count in enumerate(self.counts):
            if count:
                seen += count
                if seen >= rank:
                    return max(self.min_us, min(self._bucket_high(index), self.max_us))
        return self.max_us

    @property
    def mean_us(self) -> float:
        """Exact arithmetic mean (the sum is kept exactly, not per bucket)."""
        return self.sum_us / self.total if self.total else 0.0

    def summary_ms(self) -> dict[str, float]:
        """p50/p90/p99/p99.9/max/mean in milliseconds, the shape ``LoadResult`` reports."""
        summary = {label: self.percentile(pct) / 1000.0 for label, pct in SUMMARY_PERCENTILES}
        summary["max"] = (self.max_us if self.total else 0) / 1000.0
        summary["mean"] = self.mean_us / 1000.0
        return summary

    # -- transport -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able form: only the non-empty buckets are listed."""
        return {
            "precision_bits": self.precision_bits,
            "total": self.total,
            "sum_us": self.sum_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "buckets": {str(i): c for i, c in enumerate(self.counts) if c},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Histogram":
        """Rebuild a histogram written by ``to_dict()``."""
        hist = cls(precision_bits=int(data["precision_bits"]))
        for index, count in data["buckets"].items():
            hist.counts[int(index)] = int(count)
        hist.total = int(data["total"])
        hist.sum_us = int(data["sum_us"])
        hist.min_us = int(data["min_us"])
        hist.max_us = int(data["max_us"])
        return hist
