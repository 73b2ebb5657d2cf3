"""The human report of a run folder (report.md + PNG plots) and the CLI's results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from experiments.analysis import metrics, plots
from experiments.analysis.analysis import analyze_run, load_run

REPORT = "report.md"
TABLE_COLUMNS = ("size", "count", "type", "time(ms)", "algbw(GB/s)", "busbw(GB/s)",
                 "efficiency", "loss%", "p99-lat(ms)")


def _fmt(value: Any, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _p99(tail: dict[str, float] | None) -> float | None:
    return None if tail is None else tail["p99"]


def table_cells(row: dict[str, Any]) -> list[str]:
    """One row's cells in `TABLE_COLUMNS` order (efficiency in %, GB/s with 6 decimals)."""
    efficiency = None if row["efficiency"] is None else 100 * row["efficiency"]
    return [str(row["size"]), str(row["count"]), row["type"], _fmt(row["time_ms"], ".2f"),
            _fmt(row["algbw_GBps"], ".6f"), _fmt(row["busbw_GBps"], ".6f"),
            _fmt(efficiency, ".1f", " %"), _fmt(row["loss_pct"], ".3f"),
            _fmt(_p99(row["delay_ms"]), ".3f")]


def results_table(summary: dict[str, Any]) -> Table:
    """nccl-tests style rich table: one row per message size per job."""
    trusted = "" if summary["trusted"] else "  [bold red](NOT TRUSTED)[/]"
    table = Table(title=f"{summary['run']['name']} ({summary['run']['algorithm']} on "
                        f"{summary['run']['topology']}){trusted}")
    table.add_column("job")
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="left" if column == "type" else "right")
    for row in summary["rows"]:
        table.add_row(f"{row['job']} ({row['collective']})", *table_cells(row))
    return table


def headline(summary: dict[str, Any]) -> str:
    """One line: trusted or not (and why), with the best efficiency of each job."""
    best: dict[str, float] = {}
    for row in summary["rows"]:
        if row["efficiency"] is not None:
            best[row["job"]] = max(best.get(row["job"], 0.0), row["efficiency"])
    result = ", ".join(f"{job} best efficiency {100 * value:.1f} %" for job, value in best.items())
    if summary["trusted"]:
        return f"**TRUSTED.** {result or 'No collective completed.'}"
    reasons = "; ".join(summary["fidelity"]["reasons"])
    return (f"**NOT TRUSTED: do not report these numbers as results.** Why: {reasons}. "
            f"(Measured anyway: {result or 'no collective completed'}.)")


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _results(summary: dict[str, Any]) -> list[str]:
    header = ["job", "collective", "ranks", "rails", *TABLE_COLUMNS[:6], "algbw(Mb/s)",
              "busbw(Mb/s)", *TABLE_COLUMNS[6:], "retransmits", "CCT per iteration (ms)"]
    rows = []
    for row in summary["rows"]:
        cells = table_cells(row)
        rows.append([row["job"], row["collective"], str(row["ranks"]), str(row["rails"]),
                     *cells[:6], _fmt(row["algbw_Mbps"], ".3f"), _fmt(row["busbw_Mbps"], ".3f"),
                     *cells[6:], str(row["retransmits"]),
                     ", ".join(f"{c:.2f}" for c in row["cct_ms"]) or "-"])
    notes = [f"- {row['job']} S={row['size']}: {row['incomplete']} of {row['messages']} messages "
             f"never delivered; {row['iterations'] - row['iterations_complete']} iteration(s) "
             "without a CCT" for row in summary["rows"] if row["incomplete"]]
    return ["## Results (nccl-tests columns)", "",
            *_markdown_table(header, rows), "",
            f"Efficiency = busbw / (rails x {summary['run']['nic_mbps']:g} Mb/s NIC rate); "
            "time = mean collective completion time (CCT) per iteration; count = elements "
            "of the job's dtype." + _ceiling(summary), "", *_fluid(summary), *notes]


def _fluid(summary: dict[str, Any]) -> list[str]:
    estimate = summary.get("fluid")
    if not estimate:
        return []
    if estimate["efficiency"] is None:
        return [f"Fluid max-min estimate: not made ({estimate['reason']}).", ""]
    measured = metrics.weighted_efficiency(summary["rows"])
    jobs = ", ".join(f"{r['job']} {100 * r['efficiency']:.1f} %" for r in estimate["rows"])
    return [f"Fluid max-min estimate on the run's own paths (every flow at its max-min share "
            f"of each link it crossed, no queue, no loss): {100 * estimate['efficiency']:.1f} % "
            f"({jobs}); measured {_fmt(None if measured is None else 100 * measured, '.1f', ' %')}.",
            ""]


def _ceiling(summary: dict[str, Any]) -> str:
    ceiling = summary["run"].get("wire_ceiling")
    return ("" if ceiling is None else f" No NIC can exceed the wire-overhead ceiling of "
            f"{100 * ceiling:.2f} % (message bytes per link byte of a full frame).")


def _tail_line(name: str, tail: dict[str, float] | None) -> str:
    if tail is None:
        return f"- {name}: no samples"
    return (f"- {name}: p50 {tail['p50']:.3f} ms, p99 {tail['p99']:.3f} ms, p999 "
            f"{tail['p999']:.3f} ms, max {tail['max']:.3f} ms ({tail['count']} samples)")


def _network(summary: dict[str, Any]) -> list[str]:
    loss = summary["loss"]
    lines = ["## Loss", "",
             f"- switch queue drops: {loss['switch_drops']} of {loss['data_packets_sent']} data "
             f"packets sent ({loss['loss_pct']:.3f} %); host queue drops: {loss['host_drops']}",
             f"- NIC retransmissions: {loss['retransmits']} ({loss['retransmit_pct']:.3f} %)", "",
             "## Latency", "", _tail_line("one-way packet delay", summary["delay_ms"]),
             _tail_line("message completion", summary["completion_ms"]), "",
             "## Link utilization", ""]
    tiers = summary["utilization"]["tiers"]
    lines += _markdown_table(
        ["tier", "links", "mean", "p99", "max", "imbalance (max/mean-1)"],
        [[tier, str(t["links"]), f"{100 * t['mean']:.1f} %", f"{100 * t['p99']:.1f} %",
          f"{100 * t['max']:.1f} %", f"{t['imbalance_max_over_mean']:.2f}"]
         for tier, t in tiers.items()]) if tiers else ["No port samples."]
    for tier, spread in summary["utilization"]["uplink_imbalance"].items():
        lines.append(f"\nUplinks of {tier} ({spread['links']} links): imbalance max/mean-1 = "
                     f"{spread['max_over_mean']:.2f}, CoV = {spread['cov']:.2f}")
    hottest = summary["queues"]["hottest"]
    lines += ["", "## Queues (hottest ports)", ""]
    lines += _markdown_table(
        ["port", "peer", "tier", "p99 backlog (B)", "max backlog (B)", "drops"],
        [[h["port"], str(h["peer"]), h["tier"], f"{h['p99_backlog_bytes']:.0f}",
          f"{h['max_backlog_bytes']:.0f}", str(h["drops"])] for h in hottest]) \
        if hottest else ["No port samples."]
    return lines


def _faults(summary: dict[str, Any]) -> list[str]:
    """The recovery figures of each fault (experiments/analysis/recovery.py), or nothing."""
    faults = summary.get("faults") or []
    if not faults:
        return []
    rows = []
    for f in faults:
        if not f.get("executed"):
            rows.append([str(f["fault"]), f["kind"], f["target"], "not executed: "
                         + str(f.get("error")), "", "", "", "", ""])
            continue
        reroute = f["reroute_ms"]
        inflation = ", ".join(f"{job} {'n/a' if v is None else f'{100 * v:+.1f} %'}"
                              for job, v in f["cct_inflation"].items()) or "no round running"
        rows.append([str(f["fault"]), f["kind"], f["target"], _fmt(f["detect_ms"], ".1f"),
                     f"{f['stalled_flows']} ({f['never_recovered']} never)",
                     f"{reroute['median']:.1f} / {reroute['max']:.1f}" if reroute else "-",
                     _fmt(f.get("longest_stall_ms"), ".1f"),
                     f"{f['retransmits']} / {f['timeouts']}", inflation])
    return ["## Faults and recovery", "",
            *_markdown_table(["#", "kind", "target", "detect (ms)", "stalled flows",
                              "reroute median / max (ms)", "longest stall (ms)",
                              "retransmits / timeouts",
                              "CCT inflation"], rows),
            "", "Definitions: docs/faults.md. Red dashed lines in the plots mark the faults.", ""]


def _flow_control(summary: dict[str, Any]) -> list[str]:
    """Which flow control ran and, under PFC, what it paused (docs/pfc.md)."""
    found = summary.get("flow_control") or {"kind": "none"}
    if found["kind"] != "pfc":
        return ["## Flow control", "", "none: a full egress queue drops (tail drop).", ""]
    cpu = 100 * found["cpu_s"] / found["seconds"] if found.get("seconds") else 0.0
    lines = ["## Flow control", "",
             f"PFC: {found['pause_events']} pause events, {found['paused_ms']:.0f} ms paused "
             f"in all, {found['watchdog_resumes']} watchdog resumes, "
             f"{len(found['cycles'] or [])} pause cycles. The loop read every "
             f"{found['period_ms']:g} ms ({100 * found['late_fraction']:.2f} % of readings a "
             f"period late, p99 lateness {found['lateness_p99_ms']:.2f} ms) and used "
             f"{cpu:.1f} % of a core.", ""]
    if found["most_paused"]:
        lines += _markdown_table(["gate (egress paused)", "pauses", "paused (ms)", "watchdog"],
                                 [[g["gate"], str(g["pauses"]), f"{g['paused_ms']:.0f}",
                                   str(g["watchdog"])] for g in found["most_paused"]])
        lines.append("")
    return lines


def _suspects(summary: dict[str, Any]) -> list[str]:
    """railcc diagnose's ranking (experiments/analysis/diagnosis.py)."""
    found = summary.get("diagnosis")
    if not found:
        return []
    lines = ["## Suspects", "", f"{found['verdict']} (from this run's telemetry and messages; "
             "`railcc diagnose DIR` prints the same).", ""]
    lines += [f"{rank}. {s['kind']} `{s['name']}` (score {s['score']:.2f}): {s['why']}"
              for rank, s in enumerate(found["suspects"][:5], 1)]
    return lines + [""]


def render(summary: dict[str, Any], images: dict[str, Path]) -> str:
    """The Markdown text of a report."""
    run = summary["run"]
    check = summary["conservation"]
    lines = [f"# railcc run: {run['name']}", "", headline(summary), "",
             f"Controller `{run['algorithm']}` on `{run['topology']}` (NIC {run['nic_mbps']:g} "
             f"Mb/s emulated), seed {run['seed']}, started {run['started']}.", "",
             *_results(summary), "", *_flow_control(summary), *_faults(summary),
             *_suspects(summary),
             *_network(summary), "",
             "## Conservation", "",
             check["verdict"] if check["ok"] else f"FAILED: {check['verdict']}", "", "## Plots", ""]
    lines += [f"![{name}]({path.name})" for name, path in images.items()] or ["No plot data."]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path | str) -> Path:
    """(Re)analyze a run folder and write report.md and its PNG plots into it."""
    return analyse_and_report(run_dir)[1]


def analyse_and_report(run_dir: Path | str) -> tuple[dict[str, Any], Path]:
    """Analyze a run folder once (summary.json), write report.md and its plots; returns
    the summary and the report's path."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    summary = analyze_run(run)
    images = plots.all_plots(run, summary, run_dir)
    path = run_dir / REPORT
    path.write_text(render(summary, images))
    return summary, path
