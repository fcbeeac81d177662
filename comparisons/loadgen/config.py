"""The settings of one load run, checked before any socket is opened.

``LoadConfig`` is plain data: it travels to worker processes as one JSON
line (``comparisons.loadgen.fanout``), and its ``mode`` names the run in
every ``LoadResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from comparisons.loadgen.request import parse_url


@dataclass
class LoadConfig:
    """Everything one run needs (plain data, so it travels to worker processes as JSON).

    ``concurrency`` connections in total (split across ``processes``);
    ``duration`` seconds measured after ``warmup`` seconds of unmeasured load,
    and/or ``requests`` requests in total (None for no bound; with neither,
    ``time_limit`` ends the run); ``pipeline`` requests per write;
    ``new_conn`` for a connection per request; ``rate`` for an open loop of
    that many requests per second in total; ``method``/``headers``/``body``
    shape the request; ``timeout`` bounds every socket operation; ``cpu``
    pins the generator process(es).
    """

    url: str
    concurrency: int = 50
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    pipeline: int = 1
    new_conn: bool = False
    rate: float | None = None
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    timeout: float = 5.0
    processes: int = 1
    cpu: int | tuple[int, ...] | None = None
    time_limit: float = 600.0

    def validate(self) -> None:
        """Reject combinations that make no sense before any socket is opened."""
        parse_url(self.url)
        if self.concurrency < 1 or self.pipeline < 1 or self.processes < 1:
            raise ValueError("concurrency, pipeline and processes must be >= 1")
        if self.concurrency < self.processes:
            raise ValueError("need at least one connection per process")
        if self.pipeline > 1 and (self.new_conn or self.rate is not None):
            raise ValueError("pipelining is only for closed-loop keep-alive runs")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be > 0")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be >= 1")
        if self.timeout <= 0 or self.warmup < 0:
            raise ValueError("timeout must be > 0 and warmup >= 0")

    @property
    def mode(self) -> str:
        if self.rate is not None:
            return "open-loop-new-conn" if self.new_conn else "open-loop"
        if self.new_conn:
            return "new-conn"
        return "pipeline" if self.pipeline > 1 else "keepalive"
