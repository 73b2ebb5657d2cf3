"""`railcc run SPEC.toml` and `railcc report DIR`."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from experiments.cli.app import Commands, UserError, clean_orphans, console, err_console

commands = Commands()


def _default_out(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def run_and_report(spec_path: Path, output: Optional[Path], as_json: bool,
                   force: bool = False) -> dict:
    """Validate, check capacity, run, analyse, report; returns the summary."""
    from experiments.capacity.gate import OverCapacity, gate
    from experiments.runner import run
    from experiments.workload.spec import load_spec
    from fabric.net.network import require_root

    experiment = load_spec(spec_path)
    require_root()
    out_dir = (output or _default_out(experiment.name)).resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"-o {out_dir}: folder exists and is not empty")
    try:
        forced = gate(experiment, force)
    except OverCapacity as exc:
        raise UserError(f"{spec_path}: {exc}") from None
    clean_orphans()
    with err_console.status(f"{experiment.name}: starting ...") as status:
        try:
            run(experiment, out_dir, progress=lambda m: status.update(f"{experiment.name}: {m}"),
                forced_over_capacity=forced)
        except BaseException:
            _keep_failed(out_dir)
            raise
        status.update("analysing ...")
        summary, report = _analyse(out_dir)
    _show(summary, report, as_json)
    return summary


def _keep_failed(out_dir: Path) -> None:
    """A run that failed kept its records: report what can be reported, and say where."""
    if not (out_dir / "fidelity.json").is_file():
        return
    try:
        _analyse(out_dir)
    except Exception as exc:  # noqa: BLE001  (the run's own failure is what to report)
        err_console.print(f"railcc: no report of the failed run: {exc}", highlight=False,
                          soft_wrap=True)
    err_console.print(f"railcc: the run failed; what it recorded is in {out_dir} "
                      f"(railcc report {out_dir} rebuilds its report)", highlight=False,
                      soft_wrap=True)


def _analyse(run_dir: Path) -> tuple[dict, Path]:
    from experiments.analysis.report import analyse_and_report
    return analyse_and_report(run_dir)


def _show(summary: dict, report: Path, as_json: bool) -> None:
    """The summary as JSON, or the table, the trust verdict and where the report is."""
    from experiments.analysis.report import results_table
    if as_json:
        print(json.dumps(summary, indent=1, default=str))
        return
    console.print(results_table(summary))
    fidelity = summary.get("fidelity", {})
    if fidelity.get("trusted"):
        console.print("[green]trusted[/green]: the emulator kept up (CPU, link rates, "
                      "conservation)")
    else:
        reasons = escape("; ".join(fidelity.get("reasons", [])) or "unknown")
        console.print(f"[red]NOT trusted[/red]: {reasons}", highlight=False)
    console.print(f"run folder: {report.parent}\nreport: {report}", highlight=False)


@commands.command("run")
def run_command(spec: Path = typer.Argument(..., help="experiment spec (TOML)"),
                output: Optional[Path] = typer.Option(None, "-o", "--output", help="run folder"),
                as_json: bool = typer.Option(False, "--json", help="summary as JSON on stdout"),
                force: bool = typer.Option(False, "--force",
                                           help="run even above the measured trusted capacity "
                                                "(railcc check --capacity); marked untrusted")
                ) -> None:
    """Run one experiment: prints an nccl-tests style table and writes a run folder."""
    run_and_report(spec, output, as_json, force)


@commands.command("report")
def report_command(run_dir: Path = typer.Argument(..., help="run folder"),
                   as_json: bool = typer.Option(False, "--json", help="summary as JSON")) -> None:
    """(Re)build summary.json and the report of a run folder, or of every run of an A/B
    folder (railcc ab) and its ab.json / report.md, from the files alone (no root)."""
    if (run_dir / "ab.json").is_file():
        _rebuild_ab(run_dir, as_json)
        return
    from experiments.analysis.analysis import RunFormatError, check_format
    try:
        check_format(run_dir)
    except RunFormatError as exc:
        raise UserError(str(exc)) from None
    summary, report = _analyse(run_dir)
    _show(summary, report, as_json)


def _rebuild_ab(ab_dir: Path, as_json: bool) -> None:
    from experiments.ab.report import rebuild
    from experiments.cli.ab import _show as show_ab
    for manifest in sorted(ab_dir.glob("*/rep*/manifest.json")):
        _analyse(manifest.parent)
    ab = rebuild(ab_dir)
    if as_json:
        print(json.dumps(ab, indent=1, default=str))
    else:
        show_ab(ab, ab_dir)


@commands.command("diagnose")
def diagnose_command(run_dir: Path = typer.Argument(..., help="run folder"),
                     as_json: bool = typer.Option(False, "--json", help="diagnosis as JSON")
                     ) -> None:
    """Suspect links and NICs of a run, ranked from its own telemetry and messages, and why
    (experiments/analysis/diagnosis.py; no root)."""
    from experiments.analysis.analysis import RunFormatError, check_format, load_run
    from experiments.analysis.diagnosis import diagnose
    try:
        check_format(run_dir)
    except RunFormatError as exc:
        raise UserError(str(exc)) from None
    found = diagnose(load_run(run_dir))
    if as_json:
        print(json.dumps(found, indent=1))
        return
    console.print(f"{escape(str(run_dir))}: {found['verdict']}", highlight=False)
    for rank, suspect in enumerate(found["suspects"], 1):
        console.print(f"{rank}. {suspect['kind']} {escape(suspect['name'])} (score "
                      f"{suspect['score']:.2f}): {escape(suspect['why'])}", highlight=False,
                      soft_wrap=True)


DEMO_SPEC = Path(__file__).parent.parent / "specs" / "headline.toml"
DEMO_ALGOS = "ecmp,adaptive,dcqcn,swift,proactive"


@commands.command()
def demo(output: Optional[Path] = typer.Option(None, "-o", "--output", help="A/B folder"),
         repeat: str = typer.Option("5", "--repeat", help="repetitions per algorithm")) -> None:
    """The main job: the headline A/B (ecmp, adaptive, dcqcn, swift, proactive) on the
    default fabric, repeated; prints the table and writes a report (about 6 minutes here)."""
    from experiments.cli.ab import ab_command
    ab_command(spec=DEMO_SPEC, algos=DEMO_ALGOS, repeat=repeat, baseline="ecmp", vary=None,
               output=output, as_json=False, force=False, resume=None)
