"""The scale-out study's report section (comparisons/scaleout.py); the study itself runs in `compare`."""

from __future__ import annotations

from comparisons import scaleout


def study(failed: int = 0) -> dict:
    def row(layout: str, rps: float, cpu_us: float) -> dict:
        return {"layout": layout, "command": f"cmd {layout}", "server": {"cpu_percent": 90.0},
                "metrics": {"ok_rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "error_pct": 0.0, "cpu_us_per_req": cpu_us}}
    return {
        "engine": "tasklets", "instances": 2, "concurrency": 100,
        "rows": [row("direct", 20000, 40.0), row("nginx -> 1", 15000, 65.5), row("nginx -> 2", 16000, 66.0),
                 row("--workers 2", 30000, 42.0)],
        "rolling": {"requests": 50000, "failed": failed, "concurrency": 20, "duration_s": 12.0,
                    "restarts_within_load": True,
                    "restarts": [{"instance": "unix:/a", "exit_code": 0, "seconds": 0.8}] * 2},
        "idle": {"connections": 1000, "held": 1000, "upstream_connections": 12, "flash_rss_delta_kb": 100.0,
                 "nginx_kb_per_conn": 1.5},
    }


def test_no_study_no_section_and_a_skip_is_one_line() -> None:
    assert scaleout.markdown_section(None) == []
    lines = scaleout.markdown_section({"skipped": "scale-out skipped: nginx is not installed"})
    assert "scale-out skipped: nginx is not installed" in lines


def test_the_section_reports_every_layout_the_hop_and_the_lost_requests() -> None:
    text = "\n".join(scaleout.markdown_section(study(failed=3)))
    for layout in ("direct", "nginx -> 1", "nginx -> 2", "--workers 2"):
        assert f"| {layout} |" in text
    assert "the hop through nginx costs 25.5 us of CPU per request" in text
    assert "**3 failed of 50,000 requests**" in text
    assert "1.50 KB of nginx RSS each" in text and "held 12 more connections" in text
