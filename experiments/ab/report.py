"""The report of an A/B folder: DIR/report.md with the results table and side-by-side
plots; `rebuild` recomputes ab.json and the report from the files alone (no root)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.ab import plots as ab_plots, stats as ab_stats, table as ab_table

REPORT = "report.md"
AB_JSON = "ab.json"


def _headline(ab: dict[str, Any]) -> list[str]:
    lines = []
    if ab.get("stopped") or not ab.get("complete", True):
        lines += [f"**INCOMPLETE:** {ab.get('stopped') or 'not every run was done'}.", ""]
    claims = []
    for algorithm in ab["algorithms"]:
        delta = ab["deltas"][algorithm]
        if delta["baseline"]:
            continue
        if delta["delta_pct"] is None:
            claims.append(f"`{algorithm}`: no trusted efficiency to compare")
        else:
            claims.append(f"`{algorithm}` {delta['delta_pct']:+.1f} % efficiency "
                          f"({'95 % CIs overlap' if delta['ci_overlap'] else '95 % CIs separate'})")
    if claims:
        lines += [f"Against the baseline `{ab['baseline']}`: " + "; ".join(claims) + ". "
                  "Separate CIs suggest a real difference; overlapping ones do not rule one out.",
                  ""]
    return lines


def _trust(ab: dict[str, Any]) -> list[str]:
    lines = ["## Trust", "", "Only trusted runs enter the figures above.", ""]
    for algorithm in ab["algorithms"]:
        result = ab["results"][algorithm]
        lines.append(f"- `{algorithm}`: {result['trusted_label']} trusted"
                     + (f", {result['failed']} failed" if result["failed"] else ""))
        for run in result["excluded"]:
            reasons = "; ".join(run["reasons"]) or "no reason given"
            lines.append(f"  - rep {run['rep']} (seed {run['seed']}, [{run['dir']}]"
                         f"({run['dir']}/{REPORT})) {run['status']}: {reasons}")
    return lines


def _plots(ab: dict[str, Any], out_dir: Path) -> list[str]:
    lines = ["## Plots", ""]
    top = [(name, path) for name, path in (("efficiency", ab_plots.efficiency_bars(ab, out_dir)),
                                           ("one-way delay", ab_plots.delay_cdfs(ab, out_dir)))
           if path is not None]
    if top:
        lines += ["| " + " | ".join(name for name, _ in top) + " |", "|" + "---|" * len(top),
                  "| " + " | ".join(f"![{name}]({path.name})" for name, path in top) + " |", ""]
    heatmaps = ab_plots.heatmaps(ab, out_dir)
    if heatmaps:
        links = {a: path.relative_to(out_dir).as_posix() for a, path in heatmaps.items()}
        lines += ["Link utilization of one run per algorithm (its first trusted repetition):", "",
                  "| " + " | ".join(f"{a} ({Path(p).parent.name})" for a, p in links.items())
                  + " |", "|" + "---|" * len(links),
                  "| " + " | ".join(f"![{a}]({p})" for a, p in links.items()) + " |"]
    return lines if top or heatmaps else lines + ["No plot data."]


def _runs(ab: dict[str, Any]) -> list[str]:
    lines = ["## Runs (in run order)", "",
             "| # | algorithm | rep | seed | status | efficiency | seconds | report |",
             "|---:|---|---:|---:|---|---:|---:|---|"]
    for number, run in enumerate(ab["runs"], 1):
        efficiency = (run["metrics"] or {}).get("efficiency")
        cell = "-" if efficiency is None else f"{100 * efficiency:.1f} %"
        lines.append(f"| {number} | {run['algorithm']} | {run['rep']} | {run['seed']} | "
                     f"{run['status']} | {cell} | {run.get('seconds', '-')} | "
                     f"[{run['dir']}]({run['dir']}/{REPORT}) |")
    return lines


def render(ab: dict[str, Any], out_dir: Path) -> str:
    """The Markdown text of the A/B report (makes the plots it links into ``out_dir``)."""
    lines = [f"# railcc A/B: {ab['name']} on {ab['topology']}", "", *_headline(ab),
             f"{len(ab['algorithms'])} algorithm(s) x {ab['repeat']} repetition(s), interleaved; "
             f"repetition i uses seed {ab['seed']} + i. Started {ab['started']}, "
             f"finished {ab['finished']}.", "", "Reproduce with:", "", "```",
             ab["command"], "```", "", "## Results", "", *ab_table.markdown_table(ab), "",
             ab_table.caption(ab), "Efficiency = busbw / line rate, per run the mean over its "
             "rows weighted by their bytes; loss, retransmits, delay, queue, utilization: "
             "per-run figures averaged over runs (definitions: docs/ab.md)."
             + _ceiling(ab), "",
             "## Efficiency per job and size (trusted runs, mean [95 % CI])", "",
             *ab_table.job_table(ab), "",
             "## CCT per job and size (ms, trusted iterations pooled)", "",
             *ab_table.cct_table(ab), "", *_trust(ab), "", *_plots(ab, out_dir), "", *_runs(ab)]
    return "\n".join(lines) + "\n"


def _ceiling(ab: dict[str, Any]) -> str:
    ceiling = ab.get("wire_ceiling")
    return ("" if ceiling is None else f" No NIC can exceed the wire-overhead ceiling of "
            f"{100 * ceiling:.2f} % (message bytes per link byte of a full frame).")


def write_report(out_dir: Path | str, ab: dict[str, Any]) -> Path:
    """Write DIR/report.md and its plots; returns the report's path."""
    out_dir = Path(out_dir)
    path = out_dir / REPORT
    path.write_text(render(ab, out_dir))
    return path


def write_json(out_dir: Path | str, ab: dict[str, Any]) -> Path:
    """Write DIR/ab.json."""
    path = Path(out_dir) / AB_JSON
    path.write_text(json.dumps(ab, indent=1, default=str))
    return path


def rebuild(out_dir: Path | str) -> dict[str, Any]:
    """Re-read ab.json and every run's summary.json, recompute the aggregate, rewrite
    ab.json and report.md; returns the new document. Reads files only (no runs)."""
    out_dir = Path(out_dir)
    ab = json.loads((out_dir / AB_JSON).read_text())
    records = []
    for run in ab["runs"]:
        summary_path = out_dir / run["dir"] / "summary.json"
        if run["status"] != ab_stats.FAILED and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            run = {**ab_stats.run_record(run["algorithm"], run["rep"], run["seed"], run["dir"],
                                         summary), "seconds": run.get("seconds")}
        records.append(run)
    ab = {**ab, "runs": records, **ab_stats.aggregate(records, ab["algorithms"], ab["baseline"])}
    write_json(out_dir, ab)
    write_report(out_dir, ab)
    return ab
