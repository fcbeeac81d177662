"""The comparison harness: a smoke run of `compare`, the report generator, peers, the upstream.

No assertion here is about speed: the numbers are whatever the machine gives.
What is checked is that the harness runs end to end, writes well-formed
files, and that the report's prose quotes only numbers of its own tables.
"""

from __future__ import annotations

import csv
import json
import io
import re
import resource
import subprocess
import sys
import urllib.request
from dataclasses import asdict

import pytest
from rich.console import Console

from comparisons import compare, report, wrk
from comparisons.peers import PEERS, available_peers
from comparisons.scenarios import BY_NAME, SCENARIOS, Settings
from comparisons.servers import ServerUnderTest, engine_target, peer_target
from comparisons.upstream import UpstreamService, delay_of
from flash_green import engines

from .serverproc import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def second_engine() -> str:
    """Another registered in-process engine that can run here (not a process per request), or a variant."""
    for name in engines.names():
        if name == "sequential":
            continue
        try:
            cls = engines.get(name)
        except engines.EngineUnavailable:
            continue
        if not (cls.capabilities.multiprocess or cls.capabilities.fork_per_request):
            return name
    return "sequential --keep-alive 2"


@pytest.mark.filterwarnings("ignore:Using fork")  # the preexec_fn below, with eventlet imported
@pytest.mark.parametrize("generator", ["wrk", "built-in"])
def test_compare_smoke_run_writes_every_output(tmp_path, generator):
    if generator == "wrk" and not wrk.available():
        pytest.skip("wrk is not installed")
    engines_arg = f"sequential,{second_engine()}"
    argv = [sys.executable, "-m", "flash_green", "compare", "--quick", "--engines", engines_arg,
            "--scenarios", "hello", "--concurrency", "1,10", "--duration", "1", "--repeat", "1",
            "--out", str(tmp_path)]
    if generator == "built-in":
        argv.append("--no-wrk")
    # A hard limit of 2048 descriptors is plenty for 10 connections: no RLIMIT warning.
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2048)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RLIMIT" not in proc.stdout + proc.stderr
    assert "hello, keep-alive, c=10 (median of 1 repeat)" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= compare.TABLE_WIDTH

    data = json.loads((tmp_path / "results.json").read_text())
    labels = [t["label"] for t in data["targets"]]
    assert labels == engines_arg.split(",")
    assert data["failures"] == []
    assert {(r["target"], r["level"]) for r in data["summary"]} == {(t, c) for t in labels for c in (1, 10)}
    tools = {r["load"]["tool"] for r in data["runs"]}
    assert tools == ({"wrk"} if generator == "wrk" else {"flash"})
    for row in data["summary"]:
        assert {"ok_rps", "p50_ms", "p99_ms", "served_conns_pct", "cpu_percent"} <= set(row["metrics"])
    assert set(data["ceiling"]) == {"keepalive c=100", "new-conn c=10"}
    assert data["environment"]["command"].startswith("python -m flash_green compare --quick")

    with open(tmp_path / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {r["target"] for r in rows} == set(labels)
    # Every run served requests, and the CSV says what results.json says.
    summary = {(r["target"], r["level"]): r["metrics"]["ok_rps"] for r in data["summary"]}
    for row in rows:
        ok_rps = float(row["ok_rps"])
        assert ok_rps > 0, row
        assert ok_rps == pytest.approx(summary[(row["target"], int(row["level"]))], rel=1e-3), row

    png = tmp_path / "throughput_vs_concurrency.png"
    assert png.read_bytes()[:8] == PNG_MAGIC

    text = (tmp_path / "report.md").read_text()
    assert "## Environment" in text and data["environment"]["command"] in text
    assert "## hello, keep-alive — c=10" in text
    for label in labels:
        assert f"| {label} |" in text


# ---------------------------------------------------------------------------
# The report, from synthetic data (deterministic)
# ---------------------------------------------------------------------------


def synthetic_data() -> dict:
    """Three targets across every scenario, with numbers chosen so each verdict fires."""
    settings = Settings.quick()
    settings.generator_cpus, settings.server_cpus, settings.all_cpus = (0,), (1,), (0, 1)
    per_target = {
        # target: (hello rps, served %, efficiency %, slowloris served %, kb/conn, held, cpu rps, MB/s)
        "sequential": (9000.0, 1.0, 9.4, 0.0, 0.0, 1, 140.0, 400.0),
        "threaded": (8000.0, 100.0, 94.5, 87.0, 23.4, 1000, 75.0, 380.0),
        "threaded --workers 2": (12000.0, 100.0, 96.1, 91.0, 30.2, 1000, 270.0, 410.0),
        "peer:waitress": (5000.0, 100.0, 38.0, 100.0, 12.5, 1000, 120.0, 200.0),
    }
    runs = []
    for repeat in range(2):
        jitter = 1 + 0.05 * repeat
        for target, (rps, served, eff, slow, kb, held, cpu_rps, mbs) in per_target.items():
            kind = "peer" if target.startswith("peer:") else ("hybrid" if "--workers" in target else "engine")

            def add(scenario: str, level: int, metrics: dict, server: dict | None = None) -> None:
                runs.append({"scenario": scenario, "target": target, "kind": kind, "repeat": repeat,
                             "level": level, "metrics": metrics,
                             "server": server or {"cpu_percent": 90.0, "rss_peak_mb": 20.0}, "note": ""})

            base = {"p50_ms": 0.1, "p90_ms": 0.2, "p99_ms": 1.5, "error_pct": 0.0}
            for c in (1, 10, 100, 1000):
                add("hello", c, {"ok_rps": rps * jitter, "rps": rps * jitter, "served_conns_pct": served, **base})
            add("new-conn", 10, {"ok_rps": rps / 3 * jitter, **base})
            for name in ("blocking", "upstream"):
                add(name, 10, {"ok_rps": 2 * eff, "ideal_rps": 200.0, "efficiency_pct": eff, **base})
            add("cpu", 4, {"ok_rps": cpu_rps, **base}, {"cpu_percent": 190.0 if cpu_rps > 200 else 98.0})
            add("slowloris", 50, {"served_pct": slow, "ok_rps": slow * 100, "baseline_ok_rps": 10000.0, **base})
            idle = {"held": held, "held_pct": held / 10, "rss_before_mb": 18.0, "rss_after_mb": 18.0 + kb,
                    "served_while_held": 10 if held > 1 else 0}
            if held:
                idle["kb_per_conn"] = kb
            add("idle", 1000, idle)
            add("upload", 1 << 20, {"mb_s": mbs / 2, "ok_rps": mbs / 2, **base})
            add("download", 8 << 20, {"mb_s": mbs, "ok_rps": mbs / 8, **base})
    targets = [{"label": t, "kind": "peer" if t.startswith("peer:") else "engine", "engine": None, "args": [],
                "concurrent": True, "parallel": "--workers" in t, "summary": "x", "command": "cmd"}
               for t in per_target]
    return {
        "environment": {"date": "2026-01-01 00:00 UTC", "host": "h", "cpu": "c", "cores": 2, "kernel": "k",
                        "python": "p", "packages": {}, "wrk": None, "git": "g", "command": "python -m x",
                        "loadavg_start": [0.1], "loadavg_end": [0.2], "elapsed_s": 1.0},
        "settings": asdict(settings), "repeats": 2, "scenarios": [s.name for s in SCENARIOS],
        "targets": targets, "skipped": [],
        "ceiling": {"keepalive c=100": {"tool": "wrk", "rps": 14000.0, "p99_ms": 1.0}},
        "runs": runs, "failures": [], "summary": report.summarize(runs),
    }


def test_summary_takes_the_median_and_the_spread_of_repeats():
    data = synthetic_data()
    row = next(r for r in data["summary"] if r["scenario"] == "hello" and r["target"] == "threaded" and r["level"] == 1)
    assert row["n"] == 2
    assert row["metrics"]["ok_rps"] == pytest.approx(8000 * 1.025)
    assert row["spread_pct"] == pytest.approx(100 * 400 / 8200, abs=0.1)


def test_tables_are_sorted_by_the_scenario_metric_and_show_percent_of_best():
    data = synthetic_data()
    lines = report.scenario_table(data, BY_NAME["hello"], 100)
    order = [line.split("|")[2].strip() for line in lines[2:]]
    assert order == ["threaded --workers 2 †", "sequential", "threaded", "peer:waitress"]
    assert lines[2].split("|")[4].strip() == "100"
    idle = report.scenario_table(data, BY_NAME["idle"], 1000)
    # Lower is better for memory, and a target that held 1 of 1000 is not ranked.
    assert [line.split("|")[2].strip() for line in idle[2:]][0] == "peer:waitress"
    assert "not ranked" in idle[-1] and "sequential" in idle[-1]


def test_which_model_when_quotes_only_numbers_of_the_tables():
    data = synthetic_data()
    bullets = report.which_model_when(data)
    text = "\n".join(bullets)
    for phrase in ("Processes beat one process", "Stalled below", "Starved", "Could not hold", "In short",
                   "load generator's own ceiling"):
        assert phrase in text
    before, after = report.markdown(data, []).split("## Which model when")
    tables = before + after.split("## hello", 1)[1]
    settings = data["settings"]
    allowed = {str(x) for x in (settings["sleep_ms"], settings["handler_concurrency"], 2)}
    thresholds = (report.SURVIVES_PCT, report.STALLS_PCT, report.STARVED_PCT, report.FAIR_PCT, 50,
                  100 * report.CEILING_SHARE)
    allowed |= {f"{x:.0f}" for x in thresholds}
    for bullet in bullets:
        # Ratios (×1.93) are computed from two quoted numbers; every other number must be in a table.
        for number in re.findall(r"(?<![×\d.,])\d+(?:,\d{3})*(?:\.\d+)?", bullet.replace("c=", "c= ")):
            in_a_cell = re.search(r"\| " + re.escape(number) + r"( \*| †)? \|", tables)
            in_a_heading = re.search(r"=" + re.escape(number) + r"\b", tables)
            assert number in allowed or in_a_cell or in_a_heading, f"{number!r} of {bullet!r} is in no table"


def test_write_all_regenerates_from_results_json(tmp_path):
    data = synthetic_data()
    written = report.write_all(data, str(tmp_path))
    assert {"results.json", "results.csv", "report.md", "throughput_vs_concurrency.png",
            "rss_per_idle_connection.png", "bar-cpu.png", "latency-blocking.png"} <= set(written)
    for name in written:
        if name.endswith(".png"):
            assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    (tmp_path / "report.md").unlink()
    assert report.main([str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text().startswith("# Flash comparison")


class Drawn:
    """What `make_plots` drew: each figure's axes, read just before it is saved."""

    def __init__(self, monkeypatch) -> None:
        self.axes: dict[str, list] = {}
        self.titles: dict[str, str] = {}
        original = report.PlotFiles.save

        def save(plots, fig, name):
            self.axes[name] = [dict(title=ax.get_title(), xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel(),
                                    xlim=ax.get_xlim(), ylim=ax.get_ylim(), xscale=ax.get_xscale(),
                                    yscale=ax.get_yscale(), ticks=[t.get_text() for t in ax.get_xticklabels()])
                               for ax in fig.axes]
            self.titles[name] = " ".join([fig._suptitle.get_text() if fig._suptitle else ""]
                                         + [a["title"] for a in self.axes[name]])
            original(plots, fig, name)

        monkeypatch.setattr(report.PlotFiles, "save", save)


def without_peers(data: dict) -> dict:
    runs = [r for r in data["runs"] if not r["target"].startswith("peer:")]
    return {**data, "runs": runs, "summary": report.summarize(runs),
            "targets": [t for t in data["targets"] if t["kind"] != "peer"]}


def test_plots_start_at_zero_and_label_their_axes_in_words(tmp_path, monkeypatch):
    drawn = Drawn(monkeypatch)
    report.make_plots(synthetic_data(), str(tmp_path))
    for name, axes in drawn.axes.items():
        for ax in axes:
            for axis in ("x", "y"):
                label = ax[f"{axis}label"]
                assert not re.search(r"\b[a-z]+_[a-z]+\b", label), f"{name}: {label!r} is a variable name"
            value_axis = "y" if name == "throughput_vs_concurrency.png" else "x"
            assert ax[f"{value_axis}scale"] == "linear", name
            assert ax[f"{value_axis}lim"][0] == 0, f"{name}: the value axis starts at {ax[f'{value_axis}lim'][0]}"
    throughput = drawn.axes["throughput_vs_concurrency.png"][0]
    assert throughput["ylabel"] == "successful requests per second"
    assert [t for t in throughput["ticks"] if t] == ["1", "10", "100", "1,000"]


def test_latency_plots_draw_each_percentile_on_its_own_panel(tmp_path, monkeypatch):
    drawn = Drawn(monkeypatch)
    report.make_plots(synthetic_data(), str(tmp_path))
    panels = drawn.axes["latency-blocking.png"]
    assert [p["xlabel"] for p in panels] == ["median (p50), ms", "p90, ms", "p99, ms"]
    # Each panel is scaled to its own values: a p50 of 0.1 ms fills its panel.
    assert panels[0]["xlim"][1] < 1 < panels[2]["xlim"][1]


def test_peer_notes_only_when_peers_were_measured(tmp_path, monkeypatch):
    drawn = Drawn(monkeypatch)
    report.make_plots(synthetic_data(), str(tmp_path))
    assert "peers dashed" in drawn.titles["throughput_vs_concurrency.png"]
    assert "peers grey" in drawn.titles["bar-hello.png"]
    drawn = Drawn(monkeypatch)
    report.make_plots(without_peers(synthetic_data()), str(tmp_path))
    assert not [name for name, title in drawn.titles.items() if "peer" in title]


def test_terminal_tables_show_medians_and_fit_100_columns():
    console = Console(width=compare.TABLE_WIDTH, file=io.StringIO(), record=True)
    data = synthetic_data()
    data["runs"] = [{**r, "target": r["target"] + " a-long-label-for-an-app-variant --workers 16"}
                    if r["target"] == "threaded" else r for r in data["runs"]]
    data["summary"] = report.summarize(data["runs"])
    for table in compare.median_tables(data):
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= compare.TABLE_WIDTH
    assert "hello, keep-alive, c=1 (median of 2 repeats)" in text
    assert "8,200" in text, "threaded's median of 8,000 and 8,400 req/s"
    assert "a-long-label-for-an-app-variant" in text.replace("\n", "").replace(" ", ""), "labels fold, not cut"


def test_descriptors_needed_follow_the_scenarios_that_run():
    settings = Settings.quick()
    settings.concurrency = (1, 10)
    plan = compare.Plan([], [BY_NAME["hello"]], settings, 1)
    assert compare.descriptors_needed(plan) == 10 + compare.DESCRIPTOR_MARGIN
    plan.scenarios.append(BY_NAME["idle"])
    assert compare.descriptors_needed(plan) == settings.idle_connections + compare.DESCRIPTOR_MARGIN


# ---------------------------------------------------------------------------
# Planning, peers, the upstream service
# ---------------------------------------------------------------------------


def test_default_plan_covers_every_registered_engine():
    specs = compare.default_engine_specs()
    assert [s for s in specs if " " not in s] == engines.names()
    targets, skipped = compare.build_targets(specs + ["no-such-engine"], peers=None)
    assert any("no-such-engine" in line for line in skipped)
    assert {t.engine for t in targets} <= set(engines.names())


def test_engine_target_reads_workers_app_and_paths():
    assert not engine_target("sequential").parallel
    assert engine_target("sequential --workers 2").parallel
    assert engine_target("sequential --workers 2").kind == "hybrid"
    target = engine_target("sequential pkg.mod:app --keep-alive 2", paths={"/sleep": "/green/sleep"})
    assert target.app == "pkg.mod:app" and target.args == ("--keep-alive", "2")
    assert target.path("/sleep?ms=5") == "/green/sleep?ms=5" and target.path("/") == "/"
    assert engine_target("sequential").level_cap == 1000


def test_app_variants_get_readable_labels_and_their_paths():
    targets, _ = compare.build_targets(["sequential flash_green.apps.green_demo:app"], peers=None)
    assert targets[0].label == "sequential +green_demo"
    assert targets[0].path("/upstream?port=1") == "/green/upstream?port=1"


@pytest.mark.parametrize("peer", PEERS, ids=[p.name for p in PEERS])
def test_peer_serves_the_demo_app_on_an_inherited_socket(peer):
    runnable, _ = available_peers([peer.name])
    if not runnable:
        pytest.skip(f"{peer.package} is not installed")
    with ServerUnderTest(peer_target(peer), start_timeout=30) as server:
        with urllib.request.urlopen(server.url("/"), timeout=10) as response:
            assert response.read() == b"Hello, World!"
        assert server.rss() > 0


def test_upstream_service_waits_as_asked_and_the_demo_endpoint_calls_it():
    assert delay_of(b"GET /?ms=50 HTTP/1.0\r\n\r\n") == 0.05
    assert delay_of(b"GET /?x=1&ms=7 HTTP/1.0\r\n\r\n") == 0.007
    assert delay_of(b"GET / HTTP/1.0\r\n\r\n") == 0.0
    with UpstreamService() as upstream:
        with ServerUnderTest(engine_target("sequential")) as server:
            url = server.url(f"/upstream?port={upstream.port}&ms=20")
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read() == b"upstream data\n"


def test_scenario_catalogue_matches_the_design_table():
    names = [s.name for s in SCENARIOS]
    assert names == ["hello", "new-conn", "blocking", "upstream", "cpu", "slowloris", "idle", "upload", "download"]
    for scenario in SCENARIOS:
        assert scenario.metric in {c.key for c in scenario.columns}
