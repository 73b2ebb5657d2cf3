"""The A/B campaign: one workload under several algorithms, repeated and interleaved.

Repetition i of algorithm A runs ``replace(experiment, algorithm=A, seed=seed + i)``
into ``DIR/A/rep<i>/``; repetitions are interleaved (rep 0 of every algorithm, then
rep 1, ...) so slow drift of the machine affects every algorithm alike. Each run is
analysed (summary.json, report.md) before the next one starts, never during it.
ab.json, written after every run, holds the runs and the aggregate (docs/ab.md).
The runner that builds fabrics is passed in (`experiments.runner.run` from the CLI),
so this module needs no root and unit-tests with a fake runner.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from experiments.ab import stats as ab_stats
from experiments.analysis import metrics as ab_metrics
from experiments.ab.plan import Arm, Plan
from experiments.workload.spec import Experiment

log = logging.getLogger(__name__)
FORMAT = "railcc-ab/1"
Runner = Callable[[Experiment, Path, Callable[[str], None]], Any]


def document(experiment: Experiment, plan: Plan, spec: str, command: str,
             records: Sequence[dict[str, Any]], started: str, stopped: str | None) -> dict:
    """The ab.json document: settings, every run record and the aggregate."""
    return {"format": FORMAT, "name": experiment.name, "spec": spec,
            "topology": experiment.fabric.name, "algorithms": list(plan.algorithms),
            "repeat": plan.repeat, "baseline": plan.baseline, "seed": experiment.seed,
            "vary": plan.vary,
            "arms": [{"label": arm.label, "algorithm": arm.algorithm, "key": arm.key,
                      "value": arm.value} for arm in plan.arms],
            "wire_ceiling": ab_metrics.wire_ceiling(experiment.fabric.mtu),
            "command": command, "started": started,
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "complete": stopped is None and len(records) == len(plan.order()),
            "stopped": stopped, "runs": list(records),
            **ab_stats.aggregate(records, plan.algorithms, plan.baseline)}


def analyse_run(run_dir: Path) -> dict[str, Any]:
    """summary.json and report.md of one run; returns the summary."""
    from experiments.analysis.report import write_report
    write_report(run_dir)  # analyses first: writes summary.json
    return json.loads((run_dir / "summary.json").read_text())


def run_one(experiment: Experiment, algorithm: str, rep: int, out_dir: Path, runner: Runner,
            progress: Callable[[str], None], arm: Arm | None = None) -> dict[str, Any]:
    """Run and analyse one repetition of ``arm`` (default: the algorithm alone); a run or
    an analysis that fails is recorded."""
    arm = arm or Arm(algorithm, algorithm)
    seed = experiment.seed + rep
    folder = f"{arm.folder}/rep{rep}"
    label = arm.label
    run_dir = out_dir / folder
    try:
        runner(dataclasses.replace(experiment, algorithm=algorithm, seed=seed), run_dir, progress)
    except Exception as exc:  # noqa: BLE001  (any failed run is recorded; Ctrl-C goes on)
        log.warning("ab: %s failed: %s", folder, exc)
        return ab_stats.run_record(label, rep, seed, folder, None, f"run failed: {exc}")
    progress("analysing ...")
    try:
        summary = analyse_run(run_dir)
    except Exception as exc:  # noqa: BLE001  (a broken run folder must not stop the A/B)
        log.warning("ab: analysis of %s failed", folder, exc_info=True)
        return ab_stats.run_record(label, rep, seed, folder, None,
                                   f"analysis failed: {type(exc).__name__}: {exc}")
    return ab_stats.run_record(label, rep, seed, folder, summary)


def run_ab(experiment: Experiment, plan: Plan, out_dir: Path, spec: str, command: str,
           progress: Callable[[str], None], runner: Runner,
           done: Callable[[dict], None] | None = None,
           variants: Mapping[str, Experiment] | None = None,
           resume: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the plan into ``out_dir``; returns the ab.json document (report included).

    ``variants``: the experiment of each arm (by label) when the plan varies a spec
    key; otherwise every arm runs ``experiment`` under its algorithm. ``resume``: the
    ab.json of a stopped A/B of this plan in ``out_dir``: its runs are kept and only
    the others run (a run that was cut off is run again from an empty folder).

    On Ctrl-C (or any exception) what finished so far is written (ab.json with
    ``stopped`` set, and the report) before the exception goes on.
    """
    from experiments.ab import report as ab_report
    out_dir.mkdir(parents=True, exist_ok=True)
    started = (resume or {}).get("started") or datetime.datetime.now().isoformat(
        timespec="seconds")
    records: list[dict[str, Any]] = list((resume or {}).get("runs", []))
    finished = {(r["rep"], r["algorithm"]) for r in records}
    order = plan.order()
    try:
        for number, (rep, label) in enumerate(order, 1):
            if (rep, label) in finished:
                continue
            arm = plan.arm(label)
            shutil.rmtree(out_dir / arm.folder / f"rep{rep}", ignore_errors=True)
            prefix = f"ab: run {number}/{len(order)}: {label} rep {rep}"
            progress(f"{prefix} ...")
            began = time.monotonic()
            record = run_one((variants or {}).get(label, experiment), arm.algorithm, rep,
                             out_dir, runner,
                             lambda message, prefix=prefix: progress(f"{prefix}: {message}"),
                             arm)
            record["seconds"] = round(time.monotonic() - began, 1)
            records.append(record)
            ab_report.write_json(out_dir, document(experiment, plan, spec, command, records,
                                                   started, None))
            if done:
                done(record)
    except BaseException as exc:
        ab = document(experiment, plan, spec, command, records, started,
                      f"stopped after {len(records)} of {len(order)} runs: "
                      f"{type(exc).__name__} {exc}".strip())
        ab_report.write_json(out_dir, ab)
        try:
            ab_report.write_report(out_dir, ab)
        except Exception:  # noqa: BLE001  (keep the original exception)
            log.warning("ab: report of the stopped A/B failed", exc_info=True)
        raise
    records.sort(key=lambda r: order.index((r["rep"], r["algorithm"])))
    ab = document(experiment, plan, spec, command, records, started, None)
    ab_report.write_json(out_dir, ab)
    progress("ab: writing the report ...")
    ab_report.write_report(out_dir, ab)
    return ab
