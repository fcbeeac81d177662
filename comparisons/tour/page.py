"""The course as one page: `index.html` and its PNG files, built from `tour.json` alone.

The page reads top to bottom as the course: how to read the pictures, then
each chapter - its lesson (the engine module's docstring), the experiment,
the timeline of who served whom and when, the numbers, what they say
(generated from them), and the code that changed - and ends with the five
questions of the study, answered from this run (`answers`). The images are
plain files next to the page, so it works from a file:// URL, with no
script and nothing fetched from the network.
"""

from __future__ import annotations

import html
import os
import re
from typing import Any

from .answers import Answer, ChapterResult, answer_all
from .chapters import BY_KEY, Chapter, Outcome
from .experiments import Run, Scale, build_experiments
from .lessons import code_of, lesson
from .measures import median_run
from .plots import bars, timeline

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 1120px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 2em; margin-bottom: 0.2em; } h2 { margin-top: 2.5em; border-bottom: 1px solid #ccc; }
h3 { margin-bottom: 0.3em; } img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; line-height: 1.35; }
.add { background: #e6ffec; display: block; } .del { background: #ffebe9; display: block; }
.hunk { color: #888; display: block; } .lesson dt { font-weight: bold; margin-top: 0.6em; }
.lesson dd { margin-left: 1.2em; } .verdict { background: #fffbe6; padding: 0.6em 1em; border-left: 4px solid #e6c200; }
.meta { color: #666; font-size: 0.9em; } nav a { margin-right: 0.8em; }
"""

HOW_TO_READ = (
    "Each chapter runs one small experiment on the previous chapter's server and on this chapter's, "
    "side by side, with every request traced (--trace-requests) and every client logging its own "
    "times on the same clock. In the timelines, one row is one client connection and time runs "
    "left to right from the start of the experiment (ms). Light grey: the client had sent its "
    "request but the server had not read a byte of it yet (it sat in the listen backlog or in a "
    "socket buffer: only the client can see that). Dark grey: the request was arriving (a slow "
    "client trickling it) or queued inside the server. A colour: the request was being served, in "
    "the colour of the OS thread (or process) that ran it. Overlapping bars of one colour are "
    "concurrency - one thread interleaving several requests; overlapping bars of different "
    "processes are parallelism - several cores at work. Tiny bars are drawn at a minimum width so "
    "that they stay visible.")


def write_page(data: dict[str, Any], out_dir: str) -> str:
    """Draw the figures and write index.html into `out_dir`; return the page's path."""
    scale = Scale.named(data["scale"])
    experiments = build_experiments(scale)
    runs: dict[tuple[str, str], list[Run]] = {}
    for item in data["runs"]:
        run = Run.from_dict(item)
        runs.setdefault((run.experiment, run.target), []).append(run)
    results = []
    for number, key in enumerate(data["chapters"], start=1):
        chapter = BY_KEY[key]
        result = _chapter_result(number, chapter, experiments[chapter.experiment].title, runs, out_dir)
        if result is not None:
            results.append(result)
    body = [_header(data)]
    body += [_chapter_html(i, r, experiments[r.chapter.experiment].story, runs, data["environment"])
             for i, r in enumerate(results, 1)]
    body.append("<h2 id=\"answers\">The five questions, answered by this run</h2>")
    body += [_answer_html(a) for a in answer_all(results)]
    body.append(_footer(data))
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                     f"<title>Flash: the course, live</title><style>{STYLE}</style></head><body>\n"
                     + "\n".join(body) + "\n</body></html>\n")
    return path


def _chapter_result(number: int, chapter: Chapter, title: str, runs: dict, out_dir: str) -> ChapterResult | None:
    outcomes, panels = [], []
    for target in chapter.targets:
        repeats = runs.get((chapter.experiment, target.label))
        if not repeats:
            continue
        chosen, medians = median_run(repeats, chapter.headline.key)
        outcomes.append(Outcome(target.label, target.spec, medians))
        panels.append((target.label, chosen))
    if not outcomes:
        return None
    stem = f"{number:02d}-{chapter.key}"
    timeline_file, chart_file = f"{stem}-timeline.png", f"{stem}-numbers.png"
    timeline(panels, os.path.join(out_dir, timeline_file), f"{chapter.title}: {title}")
    if len(outcomes) < 2:
        chart_file = ""  # one server: nothing to compare, the table says it
    else:
        bars([(o.label, o.get(chapter.headline.key)) for o in outcomes], os.path.join(out_dir, chart_file),
             chapter.headline.label, f"{title}: {chapter.headline.what}"
             + (" - lower is better" if chapter.headline.better == "lower" else " - higher is better"))
    return ChapterResult(chapter, title, outcomes, timeline_file, chart_file)


def _header(data: dict[str, Any]) -> str:
    env = data["environment"]
    nav = " ".join(f"<a href=\"#{key}\">{html.escape(BY_KEY[key].title)}</a>" for key in data["chapters"])
    return (
        "<h1>Flash: the course, live</h1>"
        "<p>What makes a web server scale, shown by running it: one HTTP/1.1 core and one WSGI adapter, "
        "served by each concurrency model in the order of the study, each chapter fixing what the "
        "previous one got wrong - measured on this machine, in this run.</p>"
        f"<p class=\"meta\">{html.escape(env['date'])} · {html.escape(env['cpu'])}, {env['cores']} cores · "
        f"{html.escape(env['python'])} · git {html.escape(env['git'])} · "
        f"<code>{html.escape(env['command'])}</code> · "
        f"load average (1, 5, 15 min) {_load(env['loadavg_start'])} at the start, "
        f"{_load(data.get('loadavg_end'))} at the end · "
        f"{data['duration_s']:.0f} s</p>"
        f"<nav>{nav} <a href=\"#answers\">the five questions</a></nav>"
        f"<h2 id=\"reading\">How to read the pictures</h2><p>{html.escape(HOW_TO_READ)}</p>"
        + "".join(f"<p class=\"meta\">Not run: {html.escape(s)}</p>" for s in data.get("skipped", []))
    )


def _load(values: list[float] | None) -> str:
    return ", ".join(f"{v:g}" for v in values or []) or "unknown"


def _chapter_html(number: int, result: ChapterResult, story: str, runs: dict, environment: dict) -> str:
    chapter = result.chapter
    parts = [f"<h2 id=\"{chapter.key}\">{number}. {html.escape(chapter.title)}</h2>"]
    for module in chapter.lessons:
        parts.append(_lesson_html(module))
    parts.append(f"<h3>The experiment: {html.escape(result.experiment_title)}</h3>")
    parts.append(f"<p>{html.escape(story)} Side by side: "
                 f"{html.escape(', '.join(o.label for o in result.outcomes))}.</p>")
    parts.append(f"<img src=\"{result.timeline}\" alt=\"timeline of {html.escape(chapter.title)}\">")
    parts.append(_numbers_table(result, runs))
    verdict = chapter.verdict(result.outcomes, environment)
    parts.append("<div class=\"verdict\">" + "".join(f"<p>{html.escape(s)}</p>" for s in verdict) + "</div>")
    if result.chart:
        parts.append(f"<img src=\"{result.chart}\" alt=\"{html.escape(chapter.headline.label)}\">")
    parts.append("<h3>The code that changed</h3>" if number > 1 else "<h3>The code</h3>")
    for ref in chapter.code:
        parts.append(f"<p class=\"meta\"><code>{html.escape(ref.label)}</code>"
                     + (f", changed from <code>{html.escape('.'.join(ref.before))}</code>" if ref.before else "")
                     + "</p>")
        parts.append(_code_html(code_of(ref)))
    return "\n".join(parts)


def _lesson_html(module: str) -> str:
    text = lesson(module)
    items = "".join(f"<dt>{html.escape(h)}</dt><dd>{_prose(b)}</dd>" for h, b in text.sections)
    return (f"<p><strong>{html.escape(text.title)}</strong> <span class=\"meta\">(from the docstring of "
            f"<code>{html.escape(module)}</code>)</span></p><dl class=\"lesson\">{items}</dl>")


def _prose(text: str) -> str:
    """Docstring paragraphs: blank lines split them, `*` lines make a list, `x` is code."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if lines and all(line.lstrip().startswith("* ") or line.startswith("  ") for line in lines) \
                and lines[0].lstrip().startswith("* "):
            items = re.split(r"\n\s*\* ", "\n" + paragraph.strip())[1:]
            out.append("<ul>" + "".join(f"<li>{_inline(' '.join(i.split()))}</li>" for i in items) + "</ul>")
        else:
            out.append(f"<p>{_inline(' '.join(paragraph.split()))}</p>")
    return "".join(out)


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _numbers_table(result: ChapterResult, runs: dict) -> str:
    chapter = result.chapter
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in chapter.columns)
    rows = []
    for o in result.outcomes:
        repeats = len(runs.get((chapter.experiment, o.label), []))
        cells = "".join(f"<td class=\"num\">{_number(o.metrics.get(key))}</td>" for key, _ in chapter.columns)
        failed = int(o.get("failed"))
        note = f" ({failed} failed)" if failed else ""
        rows.append(f"<tr><td>{html.escape(o.label)}{note}</td>{cells}<td class=\"num\">{repeats}</td></tr>")
    caption = "median of the repeats" if any(len(runs.get((chapter.experiment, o.label), [])) > 1
                                             for o in result.outcomes) else "one run"
    return (f"<table><tr><th>server</th>{head}<th>runs</th></tr>{''.join(rows)}</table>"
            f"<p class=\"meta\">Numbers: {caption}; latencies are the clients' (connect to last byte).</p>")


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.1f}"


def _code_html(lines: list[str]) -> str:
    out = []
    for line in lines:
        text = html.escape(line)
        if line.startswith(("+++", "---")):
            continue
        if line.startswith("@@"):
            out.append(f"<span class=\"hunk\">{text}</span>")
        elif line.startswith("+"):
            out.append(f"<span class=\"add\">{text}</span>")
        elif line.startswith("-"):
            out.append(f"<span class=\"del\">{text}</span>")
        else:
            out.append(text + "\n")
    return "<pre>" + "".join(out) + "</pre>"


def _answer_html(answer: Answer) -> str:
    parts = [f"<h3 id=\"{answer.anchor}\">{html.escape(answer.question)}</h3>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in answer.paragraphs]
    if answer.table:
        head, *rows = answer.table
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                     + "</table>")
    parts += [f"<figure><img src=\"{file}\" alt=\"{html.escape(caption)}\"><figcaption class=\"meta\">"
              f"{html.escape(caption)}</figcaption></figure>" for caption, file in answer.figures]
    return "\n".join(parts)


def _footer(data: dict[str, Any]) -> str:
    return ("<p class=\"meta\">Built from <a href=\"tour.json\">tour.json</a> (every client's and server's "
            "record of this run); rebuild the page with <code>python -m flash_green tour --rebuild --out "
            "DIR</code>.</p>")
