"""Largest fabric and link rate at which All2All at full load stays trusted here.

    .venv/bin/python benchmarks/trusted_sweep.py [--rates 10,20,40,80] [--fabrics ...]

For each fabric (smallest first) and NIC rate (lowest first), runs an All2All
(PXN on) over every server, sized to last about `--seconds` at line rate,
and records trusted, the reasons when not, efficiency and loss. A fabric's
sweep stops at its first untrusted rate. Appends a table to RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.analysis.analysis import analyze  # noqa: E402
from experiments.runner import run  # noqa: E402
from experiments.workload.spec import from_dict  # noqa: E402
from topologies import preset  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def all2all_spec(fabric: str, mbps: float, seconds: float) -> dict:
    """An All2All over all servers, each rank's buffer sized to take ``seconds`` at line rate."""
    spec = preset(fabric)
    ranks = spec.servers
    # Per rank (n-1)/n x S leaves over `rails` NICs of `mbps` each.
    size = int(seconds * spec.rails * mbps * 1e6 / 8 * ranks / (ranks - 1))
    return {
        "experiment": {"name": f"sweep-{fabric}-{mbps:g}".replace(".", "_"), "seed": 1},
        "topology": {"preset": fabric, "nic_mbps": mbps},
        "jobs": [{"name": "a2a", "collective": "all2all", "servers": ranks,
                  "sizes": [size], "pxn": True}],
        "limits": {"run_timeout_s": 30 * seconds + 60},
    }


def main() -> None:
    """Sweep, print and record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,20,40,80")
    parser.add_argument("--fabrics", default="rail-2tier-small,rail-2tier")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rows = []
    for fabric in args.fabrics.split(","):
        for mbps in [float(rate) for rate in args.rates.split(",")]:
            out = Path(tempfile.mkdtemp(prefix="railcc-sweep-"))
            try:
                run(from_dict(all2all_spec(fabric, mbps, args.seconds), "sweep"), out)
                summary = analyze(out)
                row = summary["rows"][0]
                rows.append((fabric, mbps, summary["trusted"], row["efficiency"],
                             summary["loss"]["loss_pct"],
                             "; ".join(summary["fidelity"]["reasons"])[:160]))
            except Exception as exc:  # noqa: BLE001  (a failed run is a result too)
                rows.append((fabric, mbps, False, 0.0, 0.0, f"run failed: {exc}"[:160]))
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
            if not rows[-1][2]:
                break
    record(rows, args.seconds)


def record(rows: list[tuple], seconds: float) -> None:
    """Append the sweep and its verdict to RESULTS.md."""
    trusted = [r for r in rows if r[2]]
    best = max(trusted, key=lambda r: (preset(r[0]).servers * preset(r[0]).rails * r[1]),
               default=None)
    lines = [f"\n## trusted_sweep.py, {datetime.date.today()} ({os.cpu_count()} cores)\n",
             f"All2All (PXN) over every server, about {seconds:g} s of traffic at line rate.\n",
             "| fabric | NIC Mb/s | offered Gb/s | trusted | efficiency | loss % | why not |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for fabric, mbps, ok, eff, loss, why in rows:
        nics = preset(fabric).servers * preset(fabric).rails
        lines.append(f"| {fabric} | {mbps:g} | {nics * mbps / 1000:.2f} | {'yes' if ok else 'NO'} "
                     f"| {100 * eff:.1f} % | {loss:.2f} | {why} |")
    if best:
        lines.append(f"\nLargest trusted: {best[0]} at {best[1]:g} Mb/s per NIC "
                     f"({preset(best[0]).servers * preset(best[0]).rails * best[1] / 1000:.2f} "
                     "Gb/s offered).")
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
