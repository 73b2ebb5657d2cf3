"""`railcc run SPEC.toml` and `railcc report DIR`."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Optional

import typer

from experiments.cli import UserError, app, console, err_console


def _default_out(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def run_and_report(spec_path: Path, output: Optional[Path], as_json: bool) -> dict:
    """Validate, run, analyse, report; returns the summary."""
    from experiments.runner import run
    from experiments.spec import load_spec
    from fabric.network import require_root

    experiment = load_spec(spec_path)
    require_root()
    out_dir = (output or _default_out(experiment.name)).resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"-o {out_dir}: folder exists and is not empty")
    with err_console.status(f"{experiment.name}: starting ...") as status:
        run(experiment, out_dir, progress=lambda m: status.update(f"{experiment.name}: {m}"))
        status.update("analysing ...")
        summary, report = _analyse(out_dir)
    _show(summary, report, as_json)
    return summary


def _analyse(run_dir: Path) -> tuple[dict, Path]:
    from experiments.analysis import analyze
    from experiments.report import write_report
    summary = analyze(run_dir)
    return summary, write_report(run_dir)


def _show(summary: dict, report: Path, as_json: bool) -> None:
    """The summary as JSON, or the table, the trust verdict and where the report is."""
    from experiments.report import results_table
    if as_json:
        print(json.dumps(summary, indent=1, default=str))
        return
    console.print(results_table(summary))
    fidelity = summary.get("fidelity", {})
    if fidelity.get("trusted"):
        console.print("[green]trusted[/green]: the emulator kept up (CPU, link rates, "
                      "conservation)")
    else:
        reasons = "; ".join(fidelity.get("reasons", [])) or "unknown"
        console.print(f"[red]NOT trusted[/red]: {reasons}", highlight=False)
    console.print(f"run folder: {report.parent}\nreport: {report}", highlight=False)


@app.command("run")
def run_command(spec: Path = typer.Argument(..., help="experiment spec (TOML)"),
                output: Optional[Path] = typer.Option(None, "-o", "--output", help="run folder"),
                as_json: bool = typer.Option(False, "--json", help="summary as JSON on stdout")
                ) -> None:
    """Run one experiment: prints an nccl-tests style table and writes a run folder."""
    run_and_report(spec, output, as_json)


@app.command("report")
def report_command(run_dir: Path = typer.Argument(..., help="run folder"),
                   as_json: bool = typer.Option(False, "--json", help="summary as JSON")) -> None:
    """(Re)build summary.json and the report of a run folder, or of every run of an A/B
    folder (railcc ab) and its ab.json / report.md, from the files alone (no root)."""
    if (run_dir / "ab.json").is_file():
        _rebuild_ab(run_dir, as_json)
        return
    if not (run_dir / "manifest.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no manifest.json)")
    summary, report = _analyse(run_dir)
    _show(summary, report, as_json)


def _rebuild_ab(ab_dir: Path, as_json: bool) -> None:
    from experiments.ab_report import rebuild
    from experiments.cli_ab import _show as show_ab
    for manifest in sorted(ab_dir.glob("*/rep*/manifest.json")):
        _analyse(manifest.parent)
    ab = rebuild(ab_dir)
    if as_json:
        print(json.dumps(ab, indent=1, default=str))
    else:
        show_ab(ab, ab_dir)


DEMO_SPEC = Path(__file__).with_name("specs") / "headline.toml"
DEMO_ALGOS = "ecmp,adaptive,reactive,proactive"


@app.command()
def demo(output: Optional[Path] = typer.Option(None, "-o", "--output", help="A/B folder"),
         repeat: str = typer.Option("5", "--repeat", help="repetitions per algorithm")) -> None:
    """The main job: the headline A/B (ecmp, adaptive, reactive, proactive) on the default
    fabric, repeated; prints the table and writes a report (about 5 minutes here)."""
    from experiments.cli_ab import ab_command
    ab_command(spec=DEMO_SPEC, algos=DEMO_ALGOS, repeat=repeat, baseline="ecmp",
               output=output, as_json=False)
