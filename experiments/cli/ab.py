"""`railcc ab SPEC.toml --algos a,b,... --repeat N`: one workload per algorithm, repeated."""

from __future__ import annotations

import datetime
import json
import shlex
from pathlib import Path
from typing import Any, Optional

import typer

from experiments.cli.app import Commands, UserError, console, err_console

commands = Commands()


def default_runner(experiment: Any, out_dir: Path, progress: Any,
                   forced_over_capacity: str | None = None) -> Path:
    """One run on a real fabric (`experiments.runner.run`): what `railcc ab` repeats."""
    from experiments.runner import run
    return run(experiment, out_dir, progress=progress, forced_over_capacity=forced_over_capacity)


def _default_out(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"ab-{name}-{stamp}"


def _finished_line(record: dict[str, Any], number: int, total: int) -> str:
    efficiency = (record["metrics"] or {}).get("efficiency")
    figure = "" if efficiency is None else f", efficiency {100 * efficiency:.1f} %"
    colour = {"trusted": "green", "untrusted": "yellow"}.get(record["status"], "red")
    why = "" if record["status"] == "trusted" else f": {'; '.join(record['reasons'])}"
    return (f"ab: run {number}/{total} {record['algorithm']} rep {record['rep']}: "
            f"[{colour}]{record['status']}[/{colour}]{figure} ({record['seconds']:.0f} s){why}")


def _show(ab: dict[str, Any], out_dir: Path) -> None:
    from experiments.ab.table import rich_table
    console.print(rich_table(ab))
    for algorithm in ab["algorithms"]:
        result = ab["results"][algorithm]
        console.print(f"{algorithm}: {result['trusted_label']} trusted"
                      + (f" ({result['failed']} failed)" if result["failed"] else ""),
                      highlight=False)
    console.print(f"A/B folder: {out_dir}\nreport: {out_dir / 'report.md'}", highlight=False)


@commands.command("ab")
def ab_command(
        spec: Path = typer.Argument(..., help="experiment spec (TOML)"),
        algos: Optional[str] = typer.Option(None, "--algos",
                                            help="comma-separated algorithms (default: all)"),
        repeat: str = typer.Option("5", "--repeat", help="repetitions per algorithm, 1..100"),
        baseline: Optional[str] = typer.Option(
            None, "--baseline", help="algorithm the others are compared to "
                                     "(default: ecmp if given, else the first)"),
        output: Optional[Path] = typer.Option(None, "-o", "--output", help="A/B folder"),
        as_json: bool = typer.Option(False, "--json", help="the aggregate (ab.json) on stdout"),
        force: bool = typer.Option(False, "--force",
                                   help="run even above the measured trusted capacity "
                                        "(railcc check --capacity); runs marked untrusted"),
) -> None:
    """Run one workload under each algorithm, repeated and interleaved; table + report."""
    from experiments.ab.campaign import run_ab
    from experiments.capacity.gate import OverCapacity, gate
    from experiments.ab.plan import PlanError, make_plan
    from experiments.workload.spec import load_spec
    from fabric.net.network import require_root

    try:
        plan = make_plan(algos, repeat, baseline)
    except PlanError as exc:
        raise UserError(str(exc)) from None
    experiment = load_spec(spec)
    out_dir = (output or _default_out(experiment.name)).resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"-o {out_dir}: exists and is not an empty folder")
    require_root()
    try:
        forced = gate(experiment, force)
    except OverCapacity as exc:
        raise UserError(f"{spec}: {exc}") from None

    def runner(experiment: Any, out_dir: Path, progress: Any) -> Path:
        return default_runner(experiment, out_dir, progress, forced)

    command = shlex.join(["railcc", "ab", str(spec), "--algos", ",".join(plan.algorithms),
                          "--repeat", str(plan.repeat), "--baseline", plan.baseline,
                          "-o", str(out_dir)])
    total = len(plan.order())
    finished: list[dict[str, Any]] = []

    def done(record: dict[str, Any]) -> None:
        finished.append(record)
        err_console.print(_finished_line(record, len(finished), total), highlight=False)

    with err_console.status(f"ab: {experiment.name}: starting ...") as status:
        ab = run_ab(experiment, plan, out_dir, str(spec), command, progress=status.update,
                    runner=runner, done=done)
    if as_json:
        print(json.dumps(ab, indent=1, default=str))
        return
    _show(ab, out_dir)
