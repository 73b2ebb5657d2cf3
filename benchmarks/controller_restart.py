"""How long a restarted controller takes to configure every switch again (resync_ms).

    .venv/bin/python benchmarks/controller_restart.py [--repeat 5] [--tree DIR] [--label L]

Per repetition: a ring AllReduce over the 8 servers of rail-2tier-small on rail 0
under ecmp (4 MB, one iteration), with a `controller-restart` fault 300 ms after
the start and 500 ms of downtime; the figure is the run's `resync_ms` (from the
end of the downtime to every switch configured). ``--tree`` runs another checkout
of railcc (its compiled NIC built or copied in) for a baseline measured in the same
session. Appends the figures to RESULTS.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spec() -> dict:
    """The benchmark's experiment as a spec dict."""
    return {"experiment": {"name": "restart", "seed": 1},
            "topology": {"preset": "rail-2tier-small"},
            "controller": {"algorithm": "ecmp"},
            "jobs": [{"name": "ring", "collective": "allreduce", "servers": 8,
                      "placement": "scattered", "rails": [0], "sizes": ["4MB"],
                      "iterations": 1}],
            "transport": {"kind": "roce"},
            "faults": [{"kind": "controller-restart", "after": "start", "at": "300ms",
                        "duration": "500ms"}]}


def main() -> None:
    """Run the repetitions, print each figure and the median, append them to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT, help="railcc checkout to run")
    parser.add_argument("--label", default="this tree")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    from experiments.analysis.analysis import analyze
    from experiments.runner import run
    from experiments.workload.spec import from_dict

    figures = []
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="railcc-restart-") as folder:
            out = Path(folder) / "run"
            run(from_dict(spec(), "controller_restart"), out)
            summary = analyze(out)
            (fault,) = summary["faults"]
            figures.append(fault["resync_ms"])
            print(f"{args.label} rep {rep}: resync {fault['resync_ms']:.0f} ms, "
                  f"trusted {summary['trusted']}", flush=True)
    median = statistics.median(figures)
    print(f"{args.label}: median {median:.0f} ms (min {min(figures):.0f}, max {max(figures):.0f})")
    with (ROOT / "benchmarks" / "RESULTS.md").open("a") as results:
        results.write(f"\n### controller_restart.py, {datetime.date.today()} ({platform.node()}, "
                      f"{platform.machine()}), `{' '.join(sys.argv)}`\n\n"
                      f"{args.label}: resync_ms median {median:.0f} (min {min(figures):.0f}, "
                      f"max {max(figures):.0f}) over {len(figures)} runs: "
                      f"{json.dumps(figures)}\n")


if __name__ == "__main__":
    main()
