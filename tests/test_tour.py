"""`python -m flash_green tour`: the course runs, its page is whole, and a real browser shows it.

One smoke tour (tiny experiments, three chapters: seconds) feeds the page
tests; the rest are units on synthetic runs. Nothing here asserts speed:
the numbers are whatever the machine gives, and what is checked is that the
page quotes them, that its pictures load, and that the code and lessons it
shows come from the modules themselves.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from comparisons.childproc import child_env
from comparisons.tour import chapters, lessons
from comparisons.tour.chapters import Outcome
from comparisons.tour.experiments import Run
from comparisons.tour.measures import joined, measure, peak_overlap
from comparisons.tour.plots import bars_figure, runner_colours, timeline_figure

from .serverproc import ROOT

pytestmark = pytest.mark.timeout(180)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"
SMOKE_CHAPTERS = ("sequential", "epoll", "processes")
#: Marks the page's root element with what the browser loaded (run on the load event).
IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (img) { return !img.complete || img.naturalWidth === 0; });
  var root = document.documentElement;
  root.setAttribute("data-images", images.length);
  root.setAttribute("data-broken", broken.map(function (img) { return img.getAttribute("src"); }).join(" "));
  root.setAttribute("data-height", root.scrollHeight);
});
</script>"""


@pytest.fixture(scope="module")
def smoke_tour(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    argv = [sys.executable, "-m", "flash_green", "tour", "--smoke", "--chapters", ",".join(SMOKE_CHAPTERS),
            "--out", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def page_text(out) -> str:
    return (out / "index.html").read_text()


def test_smoke_tour_runs_every_server_of_its_chapters(smoke_tour):
    data = json.loads((smoke_tour / "tour.json").read_text())
    assert data["chapters"] == list(SMOKE_CHAPTERS) and data["skipped"] == []
    expected = {(c.experiment, t.label) for c in chapters.select(list(SMOKE_CHAPTERS))
                for t in c.targets if not t.full_only}
    assert {(r["experiment"], r["target"]) for r in data["runs"]} == expected
    for run in data["runs"]:
        assert run["error"] == "", run["error"]
        assert len(run["server"]) == len(run["client"]) > 0, run["target"]
        assert "--trace-requests" in run["command"]


def test_the_page_reads_as_the_course_and_answers_the_five_questions(smoke_tour):
    text = page_text(smoke_tour)
    positions = [text.index(f'<h2 id="{key}">') for key in SMOKE_CHAPTERS]
    assert positions == sorted(positions), "chapters out of course order"
    answers = [text.index(f'<h3 id="{anchor}">') for anchor in
               ("implementations", "which-when", "scalable", "parallelism", "tools")]
    assert answers == sorted(answers) and answers[0] > positions[-1]
    for src in re.findall(r'<img src="([^"]+)"', text):
        assert (smoke_tour / src).read_bytes()[:8] == PNG_MAGIC, src
    for module in ("flash_green.engines.sequential", "flash_green.engines.epoll", "flash_green.supervisor"):
        assert f"from the docstring of <code>{module}</code>" in text


def test_the_page_quotes_the_numbers_it_measured(smoke_tour):
    """The verdicts are generated from tour.json: the median wait of v1's other
    clients and epoll's memory per idle connection appear as measured."""
    data = json.loads((smoke_tour / "tour.json").read_text())
    runs = {(r["experiment"], r["target"]): measure(Run.from_dict(r)) for r in data["runs"]}
    text = html.unescape(page_text(smoke_tour))
    wait = runs[("slow-client", "sequential")]["others.p50_ms"]
    assert f"waited {chapters.ms(wait)} (median" in text
    kb = runs[("idle-connections", "epoll")]["kb_per_idle_conn"]
    assert f"epoll {kb:,.1f} KB of memory each" in text or f"cost epoll {kb:,.1f} KB" in text


def test_page_renders_in_chromium_with_every_image(smoke_tour, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium): the page is not rendered")
    check = smoke_tour / "browser-check.html"
    check.write_text(page_text(smoke_tour).replace("</body>", IMAGE_CHECK + "</body>"))
    screenshot = tmp_path / "page.png"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1600",
            "--virtual-time-budget=5000", f"--screenshot={screenshot}", "--dump-dom", check.as_uri()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    root = re.search(r"<html[^>]*>", proc.stdout)
    assert root, proc.stderr[-2000:]
    marks = dict(re.findall(r'data-(images|broken|height)="([^"]*)"', root.group(0)))
    assert int(marks["images"]) == len(re.findall(r"<img ", page_text(smoke_tour))) > 0
    assert marks["broken"] == "", f"images that did not load: {marks['broken']}"
    assert 3000 < int(marks["height"]) < 200_000, marks["height"]
    assert screenshot.read_bytes()[:8] == PNG_MAGIC


def test_every_chapter_shows_code_and_lessons_that_exist():
    for chapter in chapters.CHAPTERS:
        for ref in chapter.code:
            assert lessons.code_of(ref), ref.label
        headings = [h for module in chapter.lessons for h, _ in lessons.lesson(module).sections]
        assert any(h.startswith("What it costs") for h in headings), chapter.key
        assert any(h.startswith(("The model", "What changed")) for h in headings), chapter.key


def test_code_is_read_from_the_module_without_its_docstring(tmp_path, monkeypatch):
    (tmp_path / "tour_sample.py").write_text(textwrap.dedent('''
        """Module."""

        class Server:
            @staticmethod
            def serve(x):
                """Why it is so."""
                return x + 1

        def serve(x):
            return x + 2
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lessons.source("tour_sample", "Server.serve") == ["@staticmethod", "def serve(x):", "    return x + 1"]
    changed = lessons.code_of(lessons.CodeRef("tour_sample", "serve", before=("tour_sample", "Server.serve")))
    assert "-    return x + 1" in changed and "+    return x + 2" in changed
    with pytest.raises(lessons.SourceNotFound):
        lessons.source("tour_sample", "Server.missing")


def synthetic_run() -> Run:
    """Two connections; the second waited 40 ms unread, then two threads of one
    process and a second process served three requests."""
    client = [
        dict(actor="a", group="g", path="/", index=0, port=1, connect=0.0, send=0.0, sent=0.0,
             response=0.05, done=0.06, status=200, error=""),
        dict(actor="b", group="g", path="/", index=0, port=2, connect=0.0, send=0.0, sent=0.0,
             response=0.09, done=0.10, status=200, error=""),
        dict(actor="b", group="g", path="/", index=1, port=2, connect=0.0, send=0.10, sent=0.10,
             response=0.15, done=0.16, status=200, error=""),
    ]
    server = [
        dict(peer="127.0.0.1:1", pid=10, thread=11, task=None, child=None, first_byte=0.001,
             app_start=0.002, app_end=0.05, last_byte=0.05),
        dict(peer="127.0.0.1:2", pid=10, thread=12, task=None, child=None, first_byte=0.04,
             app_start=0.041, app_end=0.09, last_byte=0.09),
        dict(peer="127.0.0.1:2", pid=20, thread=21, task=None, child=None, first_byte=0.101,
             app_start=0.102, app_end=0.15, last_byte=0.15),
    ]
    return Run("e", "t", 0, [], client, server)


def test_measures_join_the_clients_log_to_the_trace():
    run = synthetic_run()
    assert [(e["actor"], e["index"], r["app_start"]) for e, r in joined(run)] == \
        [("a", 0, 0.002), ("b", 0, 0.041), ("b", 1, 0.102)]
    metrics = measure(run)
    assert metrics["g.n"] == 3 and metrics["ok"] == 3
    assert metrics["g.unread_p50_ms"] == 1.0  # waits of 1, 40 and 1 ms before the server read a byte
    assert metrics["peak_in_service"] == 2 and metrics["peak_per_thread"] == 1
    assert metrics["processes"] == 2 and metrics["threads"] == 3 and metrics["peak_processes"] == 1
    assert peak_overlap([(0, 2), (1, 3), (2, 4)]) == 2


def test_each_runner_has_its_own_colour_and_name():
    colours = runner_colours(synthetic_run().server)
    assert len({c for c, _ in colours.values()}) == 3
    assert [name for _, name in colours.values()] == ["process 1 thread 1", "process 1 thread 2", "process 2"]


def test_plots_state_units_start_at_zero_and_show_only_what_is_drawn():
    run = synthetic_run()
    for record in run.server:
        record["app_start"] = record["first_byte"]  # nothing queued inside the server
    fig = timeline_figure([("one", run), ("two", run)], "title")
    axes = fig.get_axes()
    assert axes[-1].get_xlabel() == "time since the experiment started (ms)"
    for ax in axes:
        assert ax.get_xlim()[0] == 0
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert labels == ["waiting, not read by the server yet", "served by process 1 thread 1",
                          "served by process 1 thread 2", "served by process 2"]
    fig = bars_figure([("a", 3.0), ("b", 1.0)], "memory per idle connection (KB)", "title")
    (ax,) = fig.get_axes()
    assert ax.get_xlim()[0] == 0 and ax.get_xlabel().endswith("(KB)") and ax.get_legend() is None


def test_verdicts_say_when_the_next_model_did_not_win():
    """A sentence comparing two servers follows the numbers, not the expected story."""
    before = Outcome("old", "sequential", {"others.p50_ms": 10.0, "others.max_ms": 10.0, "others.n": 2})
    after = Outcome("new", "cgi", {"others.p50_ms": 50.0, "others.max_ms": 60.0, "others.n": 2})
    text = " ".join(chapters.slow_client_verdict([before, after], None))
    assert "new did not beat old" in text and "better" not in text
    text = " ".join(chapters.slow_client_verdict([after, before], None))
    assert "old did better than new on the other clients' wait: 5.0x" in text
