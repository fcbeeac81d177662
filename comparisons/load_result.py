"""What one load run measured, whichever generator measured it: ours or wrk.

``LoadResult`` is the one shape every load run comes out in: our generator
(``comparisons.loadgen``) builds it from its histogram and counters, the
wrk wrapper (``comparisons.wrk``) from wrk's summary, and the scenarios and
reports read it without asking which tool ran. Both generators import this
module; it imports neither, so neither imports the other to share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from comparisons.histogram import Histogram

#: The error kinds every ``LoadResult.errors`` holds, in report order.
ERROR_KINDS: tuple[str, ...] = ("connect", "read", "timeout", "status")


@dataclass
class LoadResult:
    """What one run measured. ``to_dict()`` is the JSON form reports consume.

    ``requests`` counts completed responses of any status during the
    measured window (after warm-up); ``sent`` counts requests written;
    ``scheduled`` (open loop only) counts requests whose intended send time
    fell in the window. ``connections_opened`` counts connections established
    before the window and still open at its start, plus those established
    during it (so new-conn runs show about one per request, keep-alive runs
    about ``concurrency``; failed dials are not counted).
    ``latency_ms`` holds p50/p90/p99/p99.9/max/mean. ``generator_cpu`` is
    the share of one core each generator process used (ours only): near 1.0
    the generator, not the server, was the bottleneck.
    ``histogram`` is kept (ours only; wrk gives no histogram) so that runs
    can be merged later; it is left out of ``to_dict()`` unless asked for.
    """

    url: str
    mode: str
    concurrency: int
    requests: int
    duration: float
    rps: float
    bytes_read: int
    latency_ms: dict[str, float]
    errors: dict[str, int]
    status_counts: dict[int, int]
    connections_opened: int
    sent: int
    tool: str = "flash"
    processes: int = 1
    pipeline: int = 1
    rate: float | None = None
    scheduled: int | None = None
    generator_cpu: float | None = None
    histogram: Histogram | None = field(default=None, repr=False, compare=False)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def to_dict(self, include_histogram: bool = False) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "histogram"}
        data["latency_ms"] = dict(self.latency_ms)
        data["errors"] = dict(self.errors)
        data["status_counts"] = {str(code): count for code, count in sorted(self.status_counts.items())}
        if include_histogram and self.histogram is not None:
            data["histogram"] = self.histogram.to_dict()
        return data

    def format(self) -> str:
        """A few human-readable lines, like wrk's summary."""
        lat = self.latency_ms
        shape = f"c={self.concurrency} processes={self.processes}"
        if self.pipeline > 1:
            shape += f" pipeline={self.pipeline}"
        if self.rate is not None:
            shape += f" rate={self.rate:g}/s scheduled={self.scheduled} sent={self.sent}"
        lines = [
            f"{self.tool} {self.mode} {self.url} {shape}",
            f"  {self.requests} requests in {self.duration:.2f}s = {self.rps:,.0f} req/s, "
            f"{self.bytes_read / 1e6:.1f} MB read, {self.connections_opened} connections opened"
            + (f", generator CPU {self.generator_cpu:.0%}" if self.generator_cpu is not None else ""),
            "  latency ms: " + "  ".join(f"{key} {lat.get(key, 0.0):.3f}" for key in ("p50", "p90", "p99", "p99.9", "max", "mean")),
            "  errors: " + "  ".join(f"{kind} {self.errors.get(kind, 0)}" for kind in ERROR_KINDS),
        ]
        if self.status_counts:
            lines.append("  status: " + "  ".join(f"{code}={count}" for code, count in sorted(self.status_counts.items())))
        return "\n".join(lines)
