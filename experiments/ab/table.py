"""The A/B results table: cells shared by the terminal (rich) and the report (Markdown)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

COLUMNS = ("algorithm", "trusted", "efficiency (95% CI)", "vs baseline",
           "fluid estimate (95% CI)", "CCT p50 (ms)",
           "CCT p99 (ms)", "loss %", "retransmits", "p99 delay (ms)", "p99 queue (B)",
           "fabric util mean", "fabric util max", "uplink imbalance")


def _number(figure: dict[str, float] | None, spec: str) -> str:
    return "-" if figure is None else f"{figure['mean']:{spec}}"


def _percent(figure: dict[str, float] | None) -> str:
    return "-" if figure is None else f"{100 * figure['mean']:.1f} %"


def _efficiency(figure: dict[str, float] | None) -> str:
    if figure is None:
        return "-"
    return (f"{100 * figure['mean']:.1f} % [{100 * figure['low']:.1f}, "
            f"{100 * figure['high']:.1f}]")


def _delta(delta: dict[str, Any]) -> str:
    if delta["baseline"]:
        return "baseline"
    if delta["delta_pct"] is None:
        return "-"
    overlap = "CIs overlap" if delta["ci_overlap"] else "CIs separate"
    return f"{delta['delta_pct']:+.1f} % ({overlap})"


def _cct(tail: dict[str, float] | None, key: str) -> str:
    return "-" if tail is None else f"{tail[key]:.1f}"


def rows(ab: dict[str, Any]) -> list[list[str]]:
    """One row of `COLUMNS` cells per algorithm of an ab.json document, in run order."""
    cells = []
    for algorithm in ab["algorithms"]:
        result = ab["results"][algorithm]
        figures = result["metrics"]
        cct = result["cct_ms"].get(ab["headline_cct"]) if ab["headline_cct"] else None
        cells.append([
            algorithm, result["trusted_label"], _efficiency(figures["efficiency"]),
            _delta(ab["deltas"][algorithm]), _efficiency(figures.get("fluid_efficiency")),
            _cct(cct, "p50"), _cct(cct, "p99"),
            _number(figures["loss_pct"], ".3f"), _number(figures["retransmits"], ".1f"),
            _number(figures["delay_p99_ms"], ".2f"),
            _number(figures["queue_p99_bytes"], ".0f"),
            _percent(figures["fabric_util_mean"]), _percent(figures["fabric_util_max"]),
            _number(figures["uplink_imbalance"], ".2f")])
    return cells


def caption(ab: dict[str, Any]) -> str:
    """What the table shows, in one sentence."""
    cct = f"CCT of {ab['headline_cct']}" if ab["headline_cct"] else "CCT"
    return (f"Trusted runs only; figures are means over repetitions (efficiency with its 95 % "
            f"bootstrap CI); fluid estimate: the same transfers at max-min fair rates on the "
            f"paths each run's flows took; {cct} pooled over iterations; baseline "
            f"{ab['baseline']}.")


def rich_table(ab: dict[str, Any]) -> Table:
    """The results table for the terminal."""
    table = Table(title=f"A/B: {ab['name']} on {ab['topology']}, {ab['repeat']} repetition(s)",
                  caption=caption(ab))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "algorithm" else "right")
    for cells in rows(ab):
        table.add_row(*cells)
    return table


def markdown_table(ab: dict[str, Any]) -> list[str]:
    """The results table as Markdown lines."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows(ab)]


def job_table(ab: dict[str, Any]) -> list[str]:
    """Markdown: efficiency per (job, S) and algorithm, mean over trusted runs with its CI."""
    keys = list(dict.fromkeys(k for a in ab["algorithms"]
                              for k in ab["results"][a].get("job_efficiency", {})))
    if not keys:
        return ["No trusted efficiency."]
    lines = ["| job, S | " + " | ".join(ab["algorithms"]) + " |",
             "|---|" + "---:|" * len(ab["algorithms"])]
    for key in keys:
        cells = [_efficiency(ab["results"][a].get("job_efficiency", {}).get(key))
                 for a in ab["algorithms"]]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def cct_table(ab: dict[str, Any]) -> list[str]:
    """Markdown: CCT p50 / p99 (ms) per (job, S) and algorithm, pooled trusted iterations."""
    keys = list(dict.fromkeys(k for a in ab["algorithms"] for k in ab["results"][a]["cct_ms"]))
    if not keys:
        return ["No collective completed."]
    header = ["job, S"] + [f"{a} p50 / p99 (n)" for a in ab["algorithms"]]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(ab["algorithms"])]
    for key in keys:
        cells = []
        for algorithm in ab["algorithms"]:
            tail = ab["results"][algorithm]["cct_ms"].get(key)
            cells.append("-" if tail is None else
                         f"{tail['p50']:.1f} / {tail['p99']:.1f} ({tail['count']})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines
