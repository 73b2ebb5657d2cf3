"""`railcc ab SPEC.toml --algos a,b,... --repeat N`: one workload per algorithm, repeated."""

from __future__ import annotations

import datetime
import json
import shlex
from pathlib import Path
from typing import Any, Optional

import typer

from experiments.cli.app import Commands, UserError, clean_orphans, console, err_console

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


def _stopped_ab(folder: Path) -> dict[str, Any]:
    """The ab.json of a stopped A/B in ``folder``; UserError if there is none to resume."""
    path = folder / "ab.json"
    try:
        ab = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume {folder}: no readable ab.json ({exc})") from None
    if ab.get("format") != "railcc-ab/1":
        raise UserError(f"--resume {folder}: ab.json format {ab.get('format')!r}, this railcc "
                        "resumes railcc-ab/1")
    if ab.get("complete"):
        raise UserError(f"--resume {folder}: the A/B is complete; nothing to resume")
    if not Path(ab["spec"]).is_file():
        raise UserError(f"--resume {folder}: its spec {ab['spec']} is not there (resume from "
                        "the folder the A/B was started in)")
    return ab


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
        spec: Optional[Path] = typer.Argument(None, help="experiment spec (TOML)"),
        algos: Optional[str] = typer.Option(None, "--algos",
                                            help="comma-separated algorithms (default: all)"),
        repeat: str = typer.Option("5", "--repeat", help="repetitions per algorithm, 1..100"),
        baseline: Optional[str] = typer.Option(
            None, "--baseline", help="algorithm the others are compared to "
                                     "(default: ecmp if given, else the first)"),
        vary: Optional[str] = typer.Option(
            None, "--vary", help="also compare spec variants: TABLE.KEY=v1,v2 (e.g. "
                                 "transport.nic=python,compiled); every algorithm runs once "
                                 "per value"),
        output: Optional[Path] = typer.Option(None, "-o", "--output", help="A/B folder"),
        as_json: bool = typer.Option(False, "--json", help="the aggregate (ab.json) on stdout"),
        force: bool = typer.Option(False, "--force",
                                   help="run even above the measured trusted capacity "
                                        "(railcc check --capacity); runs marked untrusted"),
        resume: Optional[Path] = typer.Option(
            None, "--resume", help="finish a stopped A/B in this folder (its ab.json has "
                                   "the spec and the plan)"),
) -> None:
    """Run one workload under each algorithm, repeated and interleaved; table + report."""
    from experiments.ab.campaign import run_ab
    from experiments.capacity.gate import OverCapacity, gate
    from experiments.ab.plan import PlanError, make_plan
    from experiments.workload.spec import SpecError, from_dict, load_spec, read_spec
    from fabric.net.network import require_root

    stopped = None
    if resume is not None:
        if spec is not None or algos is not None or vary is not None or baseline is not None \
                or output is not None:
            raise UserError("--resume DIR: give no SPEC, --algos, --vary, --baseline or -o "
                            "(DIR/ab.json has them)")
        stopped = _stopped_ab(resume)
        spec, vary, baseline, output = (Path(stopped["spec"]), stopped.get("vary"),
                                        stopped["baseline"], resume)
        algos = ",".join(dict.fromkeys(arm["algorithm"] for arm in stopped.get("arms") or
                                       [{"algorithm": a} for a in stopped["algorithms"]]))
        repeat = str(stopped["repeat"])
    if spec is None:
        raise UserError("SPEC: give an experiment spec (or --resume DIR)")
    try:
        plan = make_plan(algos, repeat, baseline, vary)
    except PlanError as exc:
        raise UserError(str(exc)) from None
    if stopped is not None and list(plan.algorithms) != list(stopped["algorithms"]):
        raise UserError(f"--resume {resume}: its arms ({', '.join(stopped['algorithms'])}) are "
                        f"not this railcc's ({', '.join(plan.algorithms)})")
    experiment = load_spec(spec)
    variants = {}
    if vary is not None:
        data = read_spec(spec)
        for arm in plan.arms:
            try:
                variants[arm.label] = from_dict(arm.apply(data), str(spec))
            except (PlanError, SpecError) as exc:
                raise UserError(f"--vary {arm.key}={arm.value}: {exc}") from None
    out_dir = (output or _default_out(experiment.name)).resolve()
    if stopped is None and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"-o {out_dir}: exists and is not an empty folder")
    require_root()
    try:
        for variant in (list(variants.values()) or [experiment]):
            gate(variant, force)
    except OverCapacity as exc:
        raise UserError(f"{spec}: {exc}") from None
    clean_orphans()

    def runner(experiment: Any, out_dir: Path, progress: Any) -> Path:
        return default_runner(experiment, out_dir, progress, gate(experiment, True))

    algorithms = ",".join(dict.fromkeys(arm.algorithm for arm in plan.arms))
    command = stopped["command"] if stopped else shlex.join(
        ["railcc", "ab", str(spec), "--algos", algorithms, *(["--vary", vary] if vary else []),
         "--repeat", str(plan.repeat), "--baseline", plan.baseline, "-o", str(out_dir)])
    total = len(plan.order())
    finished: list[dict[str, Any]] = list(stopped["runs"]) if stopped else []

    def done(record: dict[str, Any]) -> None:
        finished.append(record)
        err_console.print(_finished_line(record, len(finished), total), highlight=False)

    with err_console.status(f"ab: {experiment.name}: starting ...") as status:
        ab = run_ab(experiment, plan, out_dir, str(spec), command, progress=status.update,
                    runner=runner, done=done, variants=variants, resume=stopped)
    if as_json:
        print(json.dumps(ab, indent=1, default=str))
        return
    _show(ab, out_dir)
