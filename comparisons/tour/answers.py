"""The seed's five questions, answered from this run's numbers.

Every sentence is built from the measured outcomes of the chapters that
ran; a question whose evidence was not measured says so instead of
guessing. The tools table reads which concurrency tools each engine module
imports (with `ast`), so it cannot claim a tool the code does not use.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from flash_green import engines

from .chapters import Chapter, Outcome, ms, plural
from .lessons import lesson, parsed_module

#: A module imported -> the tool it is, as the answer names it.
IMPORTED_TOOLS = {
    "tasklets": "generators on our tasklet kernel (tasklets)",
    "greenhub": "greenlets on our hub (greenlet)",
    "gevent": "greenlets on gevent's hub (gevent)",
    "eventlet": "green threads on eventlet's hub (eventlet)",
    "asyncio": "coroutines on an event loop (asyncio)",
}
#: A call `module.attribute` -> the tool.
CALLED_TOOLS = {
    ("select", "epoll"): "readiness polling (select.epoll)",
    ("threading", "Thread"): "OS threads (threading)",
    ("subprocess", "Popen"): "a process per request (subprocess)",
    ("os", "fork"): "processes (os.fork, the supervisor)",
}
#: What each tool is judged by: (metric, what it says, the best is the "max" or the "min").
TOOL_MEASURES = {
    "readiness polling (select.epoll)": ("kb_per_idle_conn", "KB per idle connection", "min"),
    "OS threads (threading)": ("peak_in_service", "requests in the app at once", "max"),
    "a process per request (subprocess)": ("children", "processes started", "max"),
    "processes (os.fork, the supervisor)": ("peak_processes", "processes running the app at once", "max"),
}
#: Engines built on a shared helper module (their requests go through both).
COMPOSED = {"epoll": ("flash_green.engines._reactor",), "event": ("flash_green.engines._reactor",),
            "cgi": ("flash_green.engines._per_thread",), "threaded": ("flash_green.engines._per_thread",)}
SUPERVISOR = "flash_green.supervisor"
#: CPU use (percent) within which a process counts as using one core (sampling is coarse).
ONE_CORE_PERCENT = 110.0


@dataclass
class Answer:
    anchor: str
    question: str
    paragraphs: list[str] = field(default_factory=list)
    #: (caption, image file) pictures of the chapters that answer it.
    figures: list[tuple[str, str]] = field(default_factory=list)
    #: A table: header row, then rows.
    table: list[list[str]] = field(default_factory=list)


@dataclass
class ChapterResult:
    """A chapter that ran: its outcomes (previous model first) and its figure files."""

    chapter: Chapter
    experiment_title: str
    outcomes: list[Outcome]
    timeline: str
    chart: str


def engine_of(o: Outcome) -> str:
    return o.spec.split()[0]


def engine_module(engine: str) -> str:
    """The module of the engine's code (of a composition: the engine every process runs)."""
    entry = engines.REGISTRY[engine]
    target = entry.engine if isinstance(entry, engines.Supervised) else entry
    return target.partition(":")[0]


def lesson_module(engine: str) -> str:
    """The module whose docstring teaches the engine (of a composition: the supervisor's)."""
    return SUPERVISOR if isinstance(engines.REGISTRY[engine], engines.Supervised) else engine_module(engine)


def tools_of(spec: str) -> list[str]:
    """The concurrency tools a server's code uses: what its engine's module (and the modules
    it is built on) imports or calls, and the supervisor's fork when it runs several processes."""
    engine = spec.split()[0]
    found = []
    for name in (engine_module(engine), *COMPOSED.get(engine, ())):
        for tool in _tools_in(name):
            if tool not in found:
                found.append(tool)
    if "--workers" in spec.split() or engines.get(engine).capabilities.multiprocess:
        found += [t for t in _tools_in(SUPERVISOR) if t == CALLED_TOOLS[("os", "fork")] and t not in found]
    return found


def _tools_in(module: str) -> list[str]:
    tree, _ = parsed_module(module)
    found = []
    for node in ast.walk(tree):
        tool = None
        if isinstance(node, ast.Import):
            tool = next((IMPORTED_TOOLS[a.name.split(".")[0]] for a in node.names
                         if a.name.split(".")[0] in IMPORTED_TOOLS), None)
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]] if not node.level else [a.name for a in node.names]
            tool = next((IMPORTED_TOOLS[n] for n in names if n in IMPORTED_TOOLS), None)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            tool = CALLED_TOOLS.get((node.value.id, node.attr))
        if tool and tool not in found:
            found.append(tool)
    return found


def who_served(o: Outcome) -> str:
    parts = [f"{int(o.get('processes'))} process{'es' if o.get('processes') != 1 else ''}"]
    if not o.get("children"):
        parts.append(f"{int(o.get('threads'))} OS thread{'s' if o.get('threads') != 1 else ''}")
    if o.get("tasks"):
        parts.append(f"{int(o.get('tasks'))} tasks")
    return ", ".join(parts)


def answer_all(results: list[ChapterResult]) -> list[Answer]:
    return [implementations(results), which_when(results), scalable(results),
            parallel_concurrent(results), python_tools(results)]


def implementations(results: list[ChapterResult]) -> Answer:
    answer = Answer("implementations", "What implementations exist?")
    seen: dict[str, tuple[Outcome, ChapterResult]] = {}
    for result in results:
        for o in result.outcomes:
            seen.setdefault(o.label, (o, result))
    answer.paragraphs.append(
        f"This run served the same app with {len(seen)} servers built on "
        f"{len({engine_of(o) for o, _ in seen.values()})} engines; each row says who ran the requests "
        f"in the chapter where the server first appeared, as its trace recorded it.")
    answer.table = [["server", "model (the engine's own summary)", "who served the requests", "chapter"]]
    for label, (o, result) in seen.items():
        summary = engines.get(engine_of(o)).summary
        answer.table.append([label, summary, who_served(o), result.chapter.title])
    return answer


def which_when(results: list[ChapterResult]) -> Answer:
    answer = Answer("which-when", "Which to use when?")
    answer.paragraphs.append(
        "Each model, what this run measured in its own chapter and in the next one (whose "
        "experiment is the one that breaks it), and its module's own advice.")
    answer.table = [["model", "measured in this run", "use it when (from its docstring)"]]
    for i, result in enumerate(results):
        breaker = results[i + 1] if i + 1 < len(results) else None
        for o in result.outcomes[1:] or result.outcomes:
            measured = [f"With {result.experiment_title}: {_headline(result, o)}."]
            if breaker is not None and breaker.outcomes and breaker.outcomes[0].label == o.label:
                measured.append(f"With {breaker.experiment_title}, {breaker.chapter.headline.what}: "
                                + ", ".join(_headline(breaker, b, named=True) for b in breaker.outcomes) + ".")
            when = next((body for heading, body in lesson(lesson_module(engine_of(o))).sections
                         if heading.startswith("When to use")), "")
            answer.table.append([o.label, " ".join(measured), " ".join(when.split())])
    return answer


def _headline(result: ChapterResult, o: Outcome, named: bool = False) -> str:
    headline = result.chapter.headline
    value = headline.format(o.get(headline.key))
    return f"{o.label} {value}" if named else f"{headline.what} {value}"


def scalable(results: list[ChapterResult]) -> Answer:
    answer = Answer("scalable", "What makes a server scalable?")
    by_key = {r.chapter.key: r for r in results}
    idle = by_key.get("epoll")
    if idle and len(idle.outcomes) >= 2:
        threads, loop = idle.outcomes[0], idle.outcomes[1]
        answer.paragraphs.append(
            f"Waiting must cost almost nothing. With {int(loop.get('idle_held')):,} idle keep-alive "
            f"connections, {threads.label} kept {int(threads.get('threads_idle')):,} OS threads and "
            f"{threads.get('kb_per_idle_conn'):,.1f} KB per connection; {loop.label} kept "
            f"{int(loop.get('threads_idle'))} and {loop.get('kb_per_idle_conn'):,.1f} KB.")
        answer.figures.append(("idle connections", idle.chart))
    fork = by_key.get("threaded")
    if fork and len(fork.outcomes) >= 2:
        cgi, threads = fork.outcomes
        answer.paragraphs.append(
            f"No work per request beyond the request: starting a process for each one held {cgi.label} "
            f"to {cgi.get('rps'):,.1f} requests/s where {threads.label} served {threads.get('rps'):,.1f}.")
    block = by_key.get("event")
    if block and len(block.outcomes) >= 2:
        loop, pool = block.outcomes
        answer.paragraphs.append(
            f"Nothing may hold the thread everyone shares: while handlers blocked, GET / waited "
            f"{ms(loop.get('hello.p50_ms'))} on {loop.label} and {ms(pool.get('hello.p50_ms'))} on "
            f"{pool.label}, whose pool gave each blocking handler a thread of its own.")
        answer.figures.append(("a blocking handler", block.timeline))
    cpu = by_key.get("processes")
    if cpu and len(cpu.outcomes) >= 2:
        one = cpu.outcomes[0]
        many = max(cpu.outcomes, key=lambda o: (o.get("peak_processes"), o.get("cpu_percent")))
        answer.paragraphs.append(
            f"Every core must work: the CPU-bound requests took {ms(one.get('wall_ms'))} on {one.label} "
            f"({one.get('cpu_percent'):.0f} % CPU) and {ms(many.get('wall_ms'))} on {many.label} "
            f"({many.get('cpu_percent'):.0f} % CPU).")
    hybrid = by_key.get("hybrid")
    if hybrid and len(hybrid.outcomes) >= 2:
        pre, hyb = hybrid.outcomes
        answer.paragraphs.append(
            f"And both at once: with 2 slow clients connected, CPU-bound requests waited "
            f"{ms(pre.get('cpu.p50_ms'))} on {pre.label} and {ms(hyb.get('cpu.p50_ms'))} on {hyb.label}.")
        answer.figures.append(("slow clients and CPU work", hybrid.timeline))
    if not answer.paragraphs:
        answer.paragraphs.append("Not measured in this run: run the chapters epoll, threaded, event, "
                                 "processes and hybrid.")
    return answer


def parallel_concurrent(results: list[ChapterResult]) -> Answer:
    answer = Answer("parallelism", "Parallelism versus concurrency")
    everyone = [(o, r) for r in results for o in r.outcomes]
    if not everyone:
        answer.paragraphs.append("Not measured in this run.")
        return answer
    conc, conc_result = max(everyone, key=lambda orr: orr[0].get("peak_per_thread"))
    answer.paragraphs.append(
        f"Concurrency is several requests in progress at once, whoever runs them: on {conc.label} "
        f"({conc_result.experiment_title}) up to {int(conc.get('peak_per_thread'))} requests were in "
        f"the app at the same moment in one OS thread - overlapping bars of one colour. They were "
        f"waiting; the thread ran one of them at a time.")
    answer.figures.append((conc_result.chapter.title, conc_result.timeline))
    cpu = next((r for r in results if r.chapter.key == "processes"), None)
    if cpu is None:
        answer.paragraphs.append("Parallelism was not measured in this run: run the chapter 'processes'.")
        return answer
    par = max(cpu.outcomes, key=lambda o: (o.get("peak_processes"), o.get("cpu_percent")))
    several_cores = par.get("cpu_percent") > ONE_CORE_PERCENT
    answer.paragraphs.append(
        f"Parallelism is several requests computing at the same instant, on several cores: with "
        f"{cpu.experiment_title}, {par.label} ran the app in up to "
        f"{plural(par.get('peak_processes'), 'process', 'processes')} at once and used "
        f"{par.get('cpu_percent'):.0f} % CPU (100 % = one core busy)"
        + ("" if several_cores else ", no more than one core's worth in this run (the load average at "
           "the top of the page says how busy the machine was)")
        + f"; it served them all in {ms(par.get('wall_ms'))}.")
    for o in cpu.outcomes:
        if o.get("processes") == 1 and o.get("threads") > 1:
            # The GIL shows only if processes did get more than a core while these threads did not.
            gil = (" - one core's worth, while the processes used more: the GIL lets one thread of a "
                   "process run Python at a time"
                   if several_cores and o.get("cpu_percent") <= ONE_CORE_PERCENT else "")
            answer.paragraphs.append(
                f"Threads of one process overlap their waits, not their Python: {o.label} had up to "
                f"{int(o.get('peak_in_service'))} CPU-bound requests in the app at once on "
                f"{plural(o.get('threads'), 'thread', 'threads')} and used {o.get('cpu_percent'):.0f} % "
                f"CPU{gil}; it served them all in {ms(o.get('wall_ms'))}.")
    answer.figures.append((cpu.chapter.title, cpu.timeline))
    return answer


def python_tools(results: list[ChapterResult]) -> Answer:
    answer = Answer("tools", "Which Python tools help?")
    answer.paragraphs.append(
        "The tools each server's code uses (read from its engine module's imports and calls), and "
        "the best this run measured among the servers built on each.")
    rows: dict[str, list[Outcome]] = {}
    for o in (o for r in results for o in r.outcomes):
        for tool in tools_of(o.spec):
            rows.setdefault(tool, []).append(o)
    answer.table = [["tool", "servers of this run built on it", "measured with it"]]
    for tool, users in rows.items():
        labels = ", ".join(dict.fromkeys(o.label for o in users))
        answer.table.append([tool, labels, _best_of(tool, users)])
    return answer


def _best_of(tool: str, users: list[Outcome]) -> str:
    """The tool's own measure ("requests at once in one thread" for a task runtime)."""
    key, what, best = TOOL_MEASURES.get(tool, ("peak_per_thread", "requests in the app at once in one thread", "max"))
    measured = [o for o in users if o.get(key)]
    if not measured:
        return "not measured in this run"
    pick = (min if best == "min" else max)(measured, key=lambda o: o.get(key))
    return f"{pick.get(key):,.1f} {what} ({pick.label})" if best == "min" else \
        f"{int(pick.get(key))} {what} ({pick.label})"
