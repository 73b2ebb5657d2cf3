"""The report of a synthetic run folder: report.md, PNG plots, and the CLI's table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from tests.unit.experiments.test_analysis import CPU_BOUND, make_run

from experiments.analysis.analysis import analyze  # noqa: E402
from experiments.analysis.report import TABLE_COLUMNS, results_table, write_report  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("busbw.png", "completion_cdf.png", "delay_cdf.png", "utilization_heatmap.png",
         "queues.png")


def test_report_and_plots_are_written(tmp_path):
    folder = make_run(tmp_path / "run")
    path = write_report(folder)
    assert path == folder / "report.md"
    text = path.read_text()
    assert "**TRUSTED.** j best efficiency 80.0 %" in text
    assert "| 10000 | 2500 | float | 10.00 | 0.001000 | 0.001000 |" in text
    assert "## Conservation" in text and "OK: 53 sent" in text
    assert "## Loss" in text and "## Latency" in text and "## Link utilization" in text
    for name in PLOTS:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
        assert f"]({name})" in text
    assert (folder / "summary.json").exists()


def test_untrusted_report_says_why(tmp_path):
    folder = make_run(tmp_path / "run", fidelity=CPU_BOUND)
    text = write_report(folder).read_text()
    assert "NOT TRUSTED" in text and "CPU-bound: machine over 95% busy in 5 of 5" in text


def test_conservation_failure_in_report(tmp_path):
    text = write_report(make_run(tmp_path / "run", switch_drops=1)).read_text()
    assert "FAILED: LOST: 1 of 53" in text


def test_results_table_columns_and_rows(tmp_path):
    summary = analyze(make_run(tmp_path / "run"))
    table = results_table(summary)
    assert [c.header for c in table.columns] == ["job", *TABLE_COLUMNS]
    assert TABLE_COLUMNS == ("size", "count", "type", "time(ms)", "algbw(GB/s)", "busbw(GB/s)",
                             "efficiency", "loss%", "p99-lat(ms)")
    assert table.row_count == 1
    console = Console(width=200, record=True)
    console.print(table)
    out = console.export_text()
    assert "80.0 %" in out and "10.00" in out and "5.000" in out


def test_report_survives_a_run_without_samples(tmp_path):
    folder = make_run(tmp_path / "run")
    for name in ("ports.csv", "delays.csv"):
        (folder / name).unlink()
    text = write_report(folder).read_text()
    assert "No port samples." in text
    assert (folder / "busbw.png").exists() and not (folder / "queues.png").exists()
    assert json.loads((folder / "summary.json").read_text())["delay_ms"] is None
