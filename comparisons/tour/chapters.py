"""The course in order: each chapter, the experiment that breaks the model before it, and what to show.

A chapter names the engine(s) it teaches (their module docstrings are its
lesson), the experiment that broke the previous chapter's model, the
targets it runs side by side - the previous model first - the code that
changed (by function name, read by `lessons`), the headline number of its
experiment, and a `verdict`: the sentences that say what happened, written
from the measured numbers of this run only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .lessons import CodeRef

SEQ = "flash_green.engines.sequential"
CGI = "flash_green.engines.cgi"
THR = "flash_green.engines.threaded"
PER_THREAD = "flash_green.engines._per_thread"
EPOLL = "flash_green.engines.epoll"
EVENT = "flash_green.engines.event"
REACTOR = "flash_green.engines._reactor"
TASKLETS = "flash_green.engines.tasklets"
GREENLET = "flash_green.engines.greenlet"
GEVENT = "flash_green.engines.gevent"
ASYNCIO = "flash_green.engines.asyncio"
POOL = "flash_green.engines.pool"
ENGINES = "flash_green.engines"
BASE = "flash_green.engines.base"
SUPERVISOR = "flash_green.supervisor"
DEMO = "flash_green.apps.demo"


@dataclass(frozen=True)
class TourTarget:
    """One server of a chapter: `spec` as `comparisons.servers.engine_target` reads it."""

    label: str
    spec: str
    #: Run only in the full tour (the quick one keeps the essential pair).
    full_only: bool = False
    #: Where this server's app serves an experiment's path, if elsewhere.
    paths: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Headline:
    """The number a chapter's bar chart shows for each target."""

    key: str
    what: str
    unit: str
    #: "lower" or "higher" is better.
    better: str = "lower"

    @property
    def label(self) -> str:
        return f"{self.what} ({self.unit})"

    def format(self, value: float) -> str:
        return f"{value:,.1f} {self.unit}" if value < 100 else f"{value:,.0f} {self.unit}"


@dataclass
class Outcome:
    """One target's result in a chapter: its median numbers over the repeats."""

    label: str
    spec: str
    metrics: dict[str, float]

    def get(self, key: str, default: float = 0.0) -> float:
        return self.metrics.get(key, default)


@dataclass(frozen=True)
class Chapter:
    key: str
    title: str
    #: Modules whose docstrings are the lesson.
    lessons: tuple[str, ...]
    experiment: str
    targets: tuple[TourTarget, ...]
    code: tuple[CodeRef, ...]
    headline: Headline
    #: The numbers table: (metric key, column title).
    columns: tuple[tuple[str, str], ...]
    #: The sentences saying what the numbers say: (outcomes, the run's environment) -> text.
    verdict: Callable[[list[Outcome], dict | None], list[str]] = field(compare=False)


#: Two numbers within this ratio of each other are "about even" (one run is noisy).
EVEN = 1.15
#: A single-process server using less of a core than this (percent) was short of CPU.
STARVED_PERCENT = 80.0


# -- formatting measured values ------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def plural(count: float, one: str, many: str) -> str:
    return f"{int(count)} {one if count == 1 else many}"


def times(a: float, b: float) -> str:
    """How many times `a` is `b`, as a short phrase."""
    if b <= 0:
        return "incomparably"
    ratio = a / b
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _compare(outcomes: list[Outcome], key: str, what: str, better: str = "lower") -> list[str]:
    """One sentence comparing the previous model (first) with each other target on `key`."""
    if len(outcomes) < 2:
        return []
    before = outcomes[0]
    sentences = []
    for after in outcomes[1:]:
        a, b = before.get(key), after.get(key)
        if not a or not b:
            continue
        if max(a, b) / min(a, b) < EVEN:
            sentences.append(f"{after.label} and {before.label} were about even on {what} "
                             f"({_value(key, b)} against {_value(key, a)}).")
        elif (b < a) == (better == "lower"):
            factor = times(a, b) if better == "lower" else times(b, a)
            sentences.append(f"{after.label} did better than {before.label} on {what}: {factor}.")
        else:
            sentences.append(f"{after.label} did not beat {before.label} on {what} in this run "
                             f"({_value(key, b)} against {_value(key, a)}).")
    return sentences


def _value(key: str, value: float) -> str:
    if key.endswith("_ms"):
        return ms(value)
    if key == "rps":
        return f"{value:,.1f} requests/s"
    if key == "kb_per_idle_conn":
        return f"{value:,.1f} KB"
    return f"{value:,.1f}"


# -- the verdicts, one per experiment --------------------------------------------------


def slow_client_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    out = []
    for o in outcomes:
        out.append(
            f"On {o.label}, the {int(o.get('others.n'))} other clients waited {ms(o.get('others.p50_ms'))} "
            f"(median; the longest {ms(o.get('others.max_ms'))}) while the slow client took "
            f"{ms(o.get('slow.p50_ms'))}; {ms(o.get('others.unread_p50_ms'))} of their median wait "
            f"passed before the server read a byte of their requests.")
    return out + _compare(outcomes, "others.p50_ms", "the other clients' wait")


def fork_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    out = []
    for o in outcomes:
        started = (f"; it started {int(o.get('children'))} processes for {int(o.get('traced'))} requests"
                   if o.get("children") else f"; {int(o.get('threads'))} threads, no process started")
        out.append(f"{o.label} served {o.get('rps'):,.1f} requests/s, {ms(o.get('clients.p50_ms'))} "
                   f"per request (median){started}.")
    return out + _compare(outcomes, "rps", "requests per second", better="higher")


def idle_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    out = []
    for o in outcomes:
        out.append(
            f"Holding {int(o.get('idle_held')):,} idle connections cost {o.label} "
            f"{o.get('kb_per_idle_conn'):,.1f} KB of memory each, with "
            f"{plural(o.get('threads_idle'), 'OS thread', 'OS threads')} in the server; its active "
            f"clients were answered in "
            f"{ms(o.get('clients.p50_ms', o.get('sleepers.p50_ms')))} (median).")
    return out + _compare(outcomes, "kb_per_idle_conn", "memory per idle connection")


def blocking_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    out = []
    for o in outcomes:
        out.append(f"On {o.label}, GET / waited {ms(o.get('hello.p50_ms'))} (median; the longest "
                   f"{ms(o.get('hello.max_ms'))}) while {int(o.get('sleepers.n'))} handlers blocked; "
                   f"{int(o.get('peak_in_service'))} requests were in the app at once at most, on "
                   f"{plural(o.get('threads'), 'OS thread', 'OS threads')}.")
    return out + _compare(outcomes, "hello.p50_ms", "the wait of GET /")


def waits_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    out = []
    for o in outcomes:
        tasks = f" and {int(o.get('tasks'))} tasks" if o.get("tasks") else ""
        out.append(f"{o.label} served all {int(o.get('sleepers.n'))} waiting requests in "
                   f"{ms(o.get('wall_ms'))}: up to {int(o.get('peak_per_thread'))} at once in one OS "
                   f"thread, on {plural(o.get('threads'), 'thread', 'threads')}{tasks}.")
    return out + _compare(outcomes, "wall_ms", "the time to serve them all")


def idle_and_waits_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    return idle_verdict(outcomes, environment) + waits_verdict(outcomes, environment)[:len(outcomes)]


def cpu_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    out = []
    for o in outcomes:
        out.append(f"{o.label} served the {int(o.get('cpu.n'))} CPU-bound requests in "
                   f"{ms(o.get('wall_ms'))} using {o.get('cpu_percent'):.0f} % CPU (100 % = one core "
                   f"busy), with up to {plural(o.get('peak_processes'), 'process', 'processes')} running the app "
                   f"at once.")
    out += _compare(outcomes, "wall_ms", "the time to serve them all")
    single = [o for o in outcomes if o.get("processes") == 1]
    if single and max(o.get("cpu_percent") for o in single) < STARVED_PERCENT:
        load = ", ".join(map(str, (environment or {}).get("loadavg_start", [])))
        out.append(f"Read these times with care: no single-process server got even {STARVED_PERCENT:.0f} % of "
                   f"a core, so other work competed for the CPU (load average {load} at the start of the "
                   f"run), and two processes could not get two cores.")
    return out


def slow_and_cpu_verdict(outcomes: list[Outcome], environment: dict | None) -> list[str]:
    out = []
    for o in outcomes:
        out.append(f"On {o.label}, the CPU-bound requests took {ms(o.get('cpu.p50_ms'))} (median; the "
                   f"longest {ms(o.get('cpu.max_ms'))}) while 2 clients trickled; up to "
                   f"{plural(o.get('peak_processes'), 'process', 'processes')} ran the app at once.")
    return out + _compare(outcomes, "cpu.p50_ms", "the CPU requests' wait")


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(
        "sequential", "v1 · sequential", (SEQ,), "slow-client",
        (TourTarget("sequential", "sequential"),),
        (CodeRef(SEQ, "SequentialEngine.serve"), CodeRef("flash_green.engines.base", "BlockingServer.accept_loop")),
        Headline("others.p50_ms", "the other clients' wait, median", "ms"),
        (("others.p50_ms", "others: median (ms)"), ("others.unread_p50_ms", "others: before a byte was read (ms)"),
         ("slow.p50_ms", "slow client (ms)"), ("threads", "OS threads")),
        slow_client_verdict),
    Chapter(
        "cgi", "v2 · cgi", (CGI,), "slow-client",
        (TourTarget("sequential", "sequential"), TourTarget("cgi", "cgi")),
        (CodeRef(CGI, "CGIApplication.spawn"), CodeRef(CGI, "CGIEngine.__init__")),
        Headline("others.p50_ms", "the other clients' wait, median", "ms"),
        (("others.p50_ms", "others: median (ms)"), ("others.unread_p50_ms", "others: before a byte was read (ms)"),
         ("slow.p50_ms", "slow client (ms)"), ("processes", "processes that ran requests")),
        slow_client_verdict),
    Chapter(
        "threaded", "v3 · threaded", (THR,), "fork-per-request",
        (TourTarget("cgi", "cgi"), TourTarget("threaded", "threaded")),
        (CodeRef(PER_THREAD, "ThreadPerConnection.serve", before=(SEQ, "SequentialEngine.serve")),
         CodeRef(PER_THREAD, "ThreadPerConnection.start_connection_thread"),
         CodeRef(PER_THREAD, "ThreadPerConnection.run_connection")),
        Headline("rps", "throughput", "requests/s", better="higher"),
        (("rps", "requests/s"), ("clients.p50_ms", "per request: median (ms)"), ("children", "processes started"),
         ("threads", "OS threads")),
        fork_verdict),
    Chapter(
        "epoll", "v4 · epoll", (EPOLL,), "idle-connections",
        (TourTarget("threaded", "threaded"), TourTarget("epoll", "epoll")),
        (CodeRef(REACTOR, "Reactor.run_loop"), CodeRef(REACTOR, "Channel.on_readable"),
         CodeRef(EPOLL, "InlineChannel.dispatch")),
        Headline("kb_per_idle_conn", "memory per idle connection", "KB"),
        (("kb_per_idle_conn", "KB per idle connection"), ("threads_idle", "OS threads while idle"),
         ("clients.p50_ms", "active clients: median (ms)")),
        idle_verdict),
    Chapter(
        "event", "v5 · event", (EVENT,), "blocking-handler",
        (TourTarget("epoll", "epoll"), TourTarget("event", "event")),
        (CodeRef(EVENT, "PooledChannel.dispatch", before=(EPOLL, "InlineChannel.dispatch")),
         CodeRef(EVENT, "PooledChannel.in_pool")),
        Headline("hello.p50_ms", "the wait of GET / while handlers block, median", "ms"),
        (("hello.p50_ms", "GET /: median (ms)"), ("hello.max_ms", "GET /: longest (ms)"),
         ("sleepers.max_ms", "blocking: longest (ms)"), ("threads", "OS threads that served")),
        blocking_verdict),
    Chapter(
        "tasklets", "tasklets · plain and tasklet handlers", (TASKLETS,), "many-waits",
        (TourTarget("event", "event"), TourTarget("tasklets", "tasklets"),
         TourTarget("tasklets + tasklet handlers", "tasklets flash_green.apps.tasklet_demo:app")),
        (CodeRef("flash_green.apps.tasklet_demo", "sleep", before=(DEMO, "sleep")),
         CodeRef(TASKLETS, "TaskletsEngine._run_tasklet_app")),
        Headline("wall_ms", "time to serve every waiting request", "ms"),
        (("wall_ms", "all served (ms)"), ("peak_per_thread", "most at once in one thread"),
         ("threads", "OS threads"), ("tasks", "tasks")),
        waits_verdict),
    Chapter(
        "green", "greenlet & gevent · blocking code made cooperative", (GREENLET, GEVENT), "many-waits",
        (TourTarget("tasklets", "tasklets"), TourTarget("greenlet", "greenlet"),
         TourTarget("greenlet + green handlers", "greenlet flash_green.apps.green_demo:app", full_only=True,
                    paths=(("/sleep", "/green/sleep"),)),
         TourTarget("gevent --patch", "gevent --patch"),
         TourTarget("eventlet --patch", "eventlet --patch", full_only=True)),
        (CodeRef("greenhub.hub", "CooperativeSocket.recv"), CodeRef(GEVENT, "GeventEngine.serve"),
         CodeRef("flash_green.patching", "apply")),
        Headline("wall_ms", "time to serve every waiting request", "ms"),
        (("wall_ms", "all served (ms)"), ("peak_per_thread", "most at once in one thread"),
         ("threads", "OS threads"), ("tasks", "greenlets")),
        waits_verdict),
    Chapter(
        "asyncio", "asyncio · explicit awaits", (ASYNCIO,), "idle-and-waits",
        (TourTarget("gevent --patch", "gevent --patch"),
         TourTarget("asyncio + async handlers", "asyncio flash_green.apps.async_demo:app"),
         TourTarget("asyncio + async handlers on uvloop", "asyncio flash_green.apps.async_demo:app --uvloop",
                    full_only=True)),
        (CodeRef("flash_green.apps.async_demo", "sleep", before=(DEMO, "sleep")),
         CodeRef(ASYNCIO, "HTTPProtocol.dispatch")),
        Headline("kb_per_idle_conn", "memory per idle connection", "KB"),
        (("kb_per_idle_conn", "KB per idle connection"), ("wall_ms", "waits all served (ms)"),
         ("peak_per_thread", "most at once in one thread"), ("tasks", "tasks")),
        idle_and_waits_verdict),
    Chapter(
        "processes", "prefork & worker · processes past the GIL", (SUPERVISOR, POOL), "cpu-bound",
        (TourTarget("asyncio", "asyncio"), TourTarget("threaded", "threaded"),
         TourTarget("prefork (2 processes)", "prefork --workers 2"),
         TourTarget("worker (2 processes x 4 threads)", "worker --workers 2 --threads 4", full_only=True)),
        (CodeRef(ENGINES, "Supervised"), CodeRef(SUPERVISOR, "Supervisor._spawn")),
        Headline("wall_ms", "time to serve every CPU-bound request", "ms"),
        (("wall_ms", "all served (ms)"), ("cpu_percent", "CPU (% of one core)"),
         ("peak_in_service", "most requests in the app at once"), ("peak_processes", "most processes at once")),
        cpu_verdict),
    Chapter(
        "hybrid", "the hybrid · --workers N of an event loop", (SUPERVISOR,), "slow-and-cpu",
        (TourTarget("prefork (2 processes)", "prefork --workers 2"),
         TourTarget("tasklets --workers 2", "tasklets --workers 2")),
        (CodeRef(SUPERVISOR, "Supervisor._serve_in_worker"), CodeRef(BASE, "Capabilities.supervised")),
        Headline("cpu.p50_ms", "the CPU-bound requests' latency, median", "ms"),
        (("cpu.p50_ms", "CPU requests: median (ms)"), ("cpu.max_ms", "CPU requests: longest (ms)"),
         ("peak_processes", "most processes at once"), ("cpu_percent", "CPU (% of one core)")),
        slow_and_cpu_verdict),
)

BY_KEY = {chapter.key: chapter for chapter in CHAPTERS}


def select(keys: list[str] | None) -> list[Chapter]:
    """The chapters named (in course order), or all; KeyError names an unknown one."""
    if not keys:
        return list(CHAPTERS)
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise KeyError(f"unknown chapter(s) {', '.join(unknown)}; known: {', '.join(BY_KEY)}")
    return [c for c in CHAPTERS if c.key in keys]
