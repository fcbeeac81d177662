"""`python -m flash_green internals` at tiny sizes, and the micro-benchmark pieces.

No figure is compared with a speed: a loaded machine may be slow at
anything. The tests check that every available runtime ran every benchmark
it supports, that the numbers are well-formed (positive, one per repeat),
and that the outputs (tables, JSON, plots) are written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from comparisons import micro
from comparisons.internals import PRESETS

from .serverproc import ROOT

pytestmark = [
    pytest.mark.timeout(240),
    # eventlet, when something imported it, warns on every fork; the
    # processes runtime forks on purpose.
    pytest.mark.filterwarnings("ignore:Using fork"),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("internals")
    proc = subprocess.run([sys.executable, "-m", "flash_green", "internals", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=200, cwd=ROOT, check=False)
    with open(out / "results.json") as handle:
        data = json.load(handle)
    return proc, data, out


def test_internals_runs_every_available_runtime(tiny_run):
    proc, data, _ = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert data["failures"] == []
    measured = {(m["runtime"], m["bench"]) for m in data["measurements"]}
    for name, runtime in micro.RUNTIMES.items():
        if runtime.available():
            assert name in data["unavailable"]
            continue
        for bench in runtime.benches:
            assert (name, bench) in measured, f"{name} did not run {bench}"
    mechanisms = {m["runtime"] for m in data["measurements"] if m["bench"] == "epoll"}
    assert mechanisms == set(micro.POLLERS)


def test_figures_are_well_formed(tiny_run):
    _, data, _ = tiny_run
    repeats = PRESETS["tiny"].repeats
    for m in data["measurements"]:
        expected = {"memory": PRESETS["tiny"].memory_repeats,
                    "timers": PRESETS["tiny"].timer_repeats}.get(m["bench"], repeats)
        assert len(m["samples"]) == expected, m
        assert m["min"] <= m["median"] <= m["max"], m
        assert m["min"] > 0, m
        assert m["unit"] == micro.UNITS[m["bench"]]
        assert m["size"] > 0


def test_outputs_tables_json_and_plots(tiny_run):
    proc, data, out = tiny_run
    for title in ("switch: two tasks take turns", "memory per idle task", "I/O wake-up",
                  "one wait, timeout 0"):
        assert title in proc.stdout
    assert data["environment"]["command"].startswith("python -m flash_green internals")
    for name in ("switch.png", "spawn.png", "timers.png", "io.png", "memory.png", "epoll.png"):
        assert os.path.getsize(out / name) > 1000
    assert data["fits_in_1gib"]["tasklets"] > 0


def test_tables_fit_100_columns_and_report_md_is_written(tiny_run):
    proc, data, out = tiny_run
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100
    text = (out / "report.md").read_text()
    assert text.startswith("# Flash scheduler internals")
    assert "## Environment" in text and data["environment"]["command"] in text
    assert "| runtime | n | us/switch (median) | spread (min-max) | switches/s |" in text
    assert "| tasklets (our kernel) |" in text and "![epoll.png](epoll.png)" in text


def test_select_is_skipped_beyond_fd_setsize():
    result = micro.run_child("pollers", {"epoll": "10:2000"}, 1, 0.002, 60)
    assert result.failure is None, result.failure
    points = {(m.runtime, m.size) for m in result.measurements}
    assert ("select", 10) in points and ("select", 2000) not in points
    assert ("epoll", 2000) in points and ("poll", 2000) in points


def test_caps_bound_what_a_runtime_is_asked_to_hold():
    threads = micro.RUNTIMES["threads"]
    assert threads.cap("memory", 100_000) == threads.caps["memory"]
    assert threads.cap("memory", 10) == 10
    measurement = micro.run_bench(micro.RUNTIMES["processes"], "memory", 1000, 1, 0.01)
    assert measurement.size == micro.RUNTIMES["processes"].caps["memory"]


def test_a_failing_child_is_reported_not_hidden():
    result = micro.run_child("tasklets", {"nosuchbench": 1}, 1, 0.01, 60)
    assert result.measurements == []
    assert result.failure is not None and "nosuchbench" in result.failure.reason


def test_calibrate_reaches_the_budget_and_respects_the_cap():
    calls = []

    def run(count: int) -> float:
        calls.append(count)
        return count * 1e-3  # a fake benchmark: 1 ms per unit

    assert micro.calibrate(run, 4, budget=0.1, cap=None) == 100
    assert micro.calibrate(run, 4, budget=0.1, cap=30) == 30


def test_measurement_summary():
    m = micro.Measurement("switch", "tasklets", 10, [3.0, 1.0, 2.0])
    assert (m.low, m.median, m.high) == (1.0, 2.0, 3.0)
    assert m.to_json()["median"] == 2.0 and m.unit == "us/switch"
