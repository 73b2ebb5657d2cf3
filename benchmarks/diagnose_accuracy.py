"""How often `railcc diagnose` names a degraded link first, and says "no suspect" of a
healthy run.

    .venv/bin/python benchmarks/diagnose_accuracy.py [--seeds 20] [--algos adaptive,ecmp]
        [--fraction 0.5] [--size 2MB]

Per algorithm and seed: a healthy run of a scattered ring AllReduce over the 8
servers x 4 rails of rail-2tier-small (placement and hashes follow the seed);
then one link, drawn with that seed among the fabric links that carried at least
`BUSY` of their rate on average while the healthy run's ring was sending (halving
a link that carries less slows nothing), is slowed to ``--fraction`` of its rate
for the whole run (a `slow-link` fault), and diagnose must rank it first. Under
ECMP the healthy runs have hash collisions: congested links, which diagnose must
not take for slow ones. Appends the table to RESULTS.md with the machine, date and
command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.analysis.analysis import analyze, load_run  # noqa: E402
from experiments.analysis.diagnosis import diagnose  # noqa: E402
from experiments.runner import run  # noqa: E402
from experiments.workload.spec import from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: A link must carry this share of its rate, on average over the ring's traffic, to be
#: a candidate for degradation.
BUSY = 0.5


def spec(algorithm: str, seed: int, size: str, faults: list[dict]) -> dict:
    """The benchmark's experiment as a spec dict."""
    data = tomllib.loads((ROOT / "experiments" / "specs" / "allreduce.toml").read_text())
    data["experiment"].update(name="diagnose", seed=seed)
    data["controller"] = {"algorithm": algorithm}
    data["jobs"] = [{"name": "ring", "collective": "allreduce", "servers": 8,
                     "placement": "scattered", "sizes": [size], "iterations": 1}]
    data["limits"] = {"run_timeout_s": 120}
    data["faults"] = faults
    return data


def busy_links(run_dir: Path) -> list[str]:
    """Fabric links (ToR-spine) whose busier queue carried >= BUSY of its rate on average
    over the samples in which the run's traffic flowed."""
    loaded = load_run(run_dir)
    names = {(e.node, e.port): (loaded.topology.link_name(link), link.mbps, link.tier)
             for link in loaded.topology.links for e in link.ends()}
    series: dict[tuple, list[dict]] = {}
    for row in loaded.ports:
        series.setdefault((row["node"], int(row["port"])), []).append(row)
    starts = [m["start_ns"] / 1e9 for m in loaded.messages.values() if m.get("start_ns")]
    ends = [m["acked_ns"] / 1e9 for m in loaded.messages.values() if m.get("acked_ns")]
    begin, end = min(starts), max(ends)
    best: dict[str, float] = {}
    for key, rows in series.items():
        name, mbps, tier = names.get(key, (None, 0, ""))
        if name is None or tier == "host":
            continue
        inside = [r for r in rows if begin <= float(r["time_s"]) <= end]
        if len(inside) < 2:
            continue
        seconds = float(inside[-1]["time_s"]) - float(inside[0]["time_s"])
        sent = int(inside[-1]["sent_bytes"]) - int(inside[0]["sent_bytes"])
        best[name] = max(best.get(name, 0.0), 8 * sent / seconds / (mbps * 1e6))
    return sorted(name for name, share in best.items() if share >= BUSY)


def one(algorithm: str, seed: int, args: argparse.Namespace, work: Path) -> dict:
    """A healthy and a degraded run of one seed; what diagnose said of each."""
    healthy_dir = work / f"{algorithm}-{seed}-healthy"
    run(from_dict(spec(algorithm, seed, args.size, [])), healthy_dir)
    healthy = analyze(healthy_dir)
    candidates = busy_links(healthy_dir)
    if not candidates:
        return {"algorithm": algorithm, "seed": seed, "skipped": "no busy fabric link"}
    link = random.Random(seed).choice(candidates)
    fault = {"kind": "slow-link", "link": link, "fraction": args.fraction}
    degraded_dir = work / f"{algorithm}-{seed}-degraded"
    run(from_dict(spec(algorithm, seed, args.size, [fault])), degraded_dir)
    degraded = analyze(degraded_dir)
    found = diagnose(load_run(degraded_dir))["suspects"]
    first = found[0]["name"] if found else None
    return {"algorithm": algorithm, "seed": seed, "link": link, "first": first,
            "hit": first == link, "healthy_clean": not healthy["diagnosis"]["suspects"],
            "healthy_trusted": healthy["trusted"], "degraded_trusted": degraded["trusted"],
            "candidates": len(candidates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--algos", default="adaptive,ecmp")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--size", default="2MB")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="railcc-diag-") as tmp:
        for algorithm in args.algos.split(","):
            for seed in range(1, args.seeds + 1):
                row = one(algorithm, seed, args, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)
    lines = ["", f"### diagnose accuracy ({datetime.date.today()}, {platform.node()}, "
             f"{platform.processor() or platform.machine()})", "",
             f"Command: `.venv/bin/python benchmarks/diagnose_accuracy.py --seeds {args.seeds} "
             f"--algos {args.algos} --fraction {args.fraction} --size {args.size}`", "",
             "| algorithm | seeds | degraded link ranked first | healthy runs with no suspect "
             "| runs trusted (healthy / degraded) |", "| --- | ---: | ---: | ---: | ---: |"]
    for algorithm in args.algos.split(","):
        mine = [r for r in rows if r["algorithm"] == algorithm and "skipped" not in r]
        lines.append(f"| {algorithm} | {len(mine)} | {sum(r['hit'] for r in mine)} of "
                     f"{len(mine)} | {sum(r['healthy_clean'] for r in mine)} of {len(mine)} | "
                     f"{sum(r['healthy_trusted'] for r in mine)} / "
                     f"{sum(r['degraded_trusted'] for r in mine)} |")
    misses = [r for r in rows if "skipped" not in r and not r["hit"]]
    if misses:
        lines.append("\nMisses: " + "; ".join(f"{r['algorithm']} seed {r['seed']}: slowed "
                                              f"{r['link']}, first {r['first']}"
                                              for r in misses))
    print("\n".join(lines))
    if not args.no_record:
        with (ROOT / "benchmarks" / "RESULTS.md").open("a") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
