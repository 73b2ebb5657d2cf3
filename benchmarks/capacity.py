"""Emulation capacity: the largest trusted NIC rate per fabric, workload and emulator layout.

    .venv/bin/python benchmarks/capacity.py [--fabrics rail-2tier-small,rail-2tier]
        [--workloads all2all,ring] [--rates 5,10,20,40] [--repeat 3]
        [--variants glibc,tcmalloc] [--seconds 3]

Fabrics: the presets, and build_fabric.py's FABRICS (``rail-64x8-8pods``: 64 servers x 8
rails in 8 pods, the capacity issue's 64 x 8 ring row). Workloads (over every server of
the fabric, sized to last about ``--seconds`` at line rate): ``all2all`` = All2All with
PXN; ``ring`` = a scattered per-rail ring AllReduce. Variants are measured interleaved
in the same run: ``defaults`` (the spec without an [emulator] table; run from a checkout
of an older commit, this is that commit's datapath), ``glibc`` (one ovs-vswitchd with
glibc's allocator), ``tcmalloc`` (one ovs-vswitchd, tcmalloc: today's default),
``4-shards`` (four ovs-vswitchd, tcmalloc), ``python-nic`` (the NIC's Python reference
datapath), ``compiled-nic`` (its compiled datapath, the default) and ``no-pollgate``
(ovs-vswitchd without fabric/net/pollgate.so), ``no-rxq-gate`` (pollgate without its
gate in front of OVS's netdev-linux receive: ``POLLGATE_RXQ=0``), ``no-epoll`` (pollgate
passing poll() over many descriptors to the kernel: ``POLLGATE_EPOLL=0``), ``no-focus``
(telemetry without the focus reads of backlogged queues between rounds).

For every (fabric, workload, variant) the rates are tried lowest first, each
``--repeat`` times; a rate counts as trusted when every repetition was, and
the sweep of that triple stops at its first untrusted rate. Each row reports
the medians of the repetitions: efficiency, NIC-received data frames per
second, and the CPU split over the traffic (share of one core: NIC agents,
each ovs-vswitchd, kernel softirq, the harness, the controller, the rest).
Appends the table to RESULTS.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.analysis.analysis import analyze  # noqa: E402
from experiments.capacity.sweep import all2all_bytes  # noqa: E402
from experiments.runner import run  # noqa: E402
from experiments.workload.spec import from_dict  # noqa: E402
from fabric.measure.machine import cpu_model  # noqa: E402
from benchmarks.build_fabric import FABRICS  # noqa: E402
from topologies import from_dict as fabric_from_dict, preset  # noqa: E402
from topologies.spec import FabricSpec  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
#: Spec tables each variant adds (a variant is compared with the others in the same run).
VARIANTS = {"defaults": {},
            "glibc": {"emulator": {"ovs_shards": 1, "ovs_allocator": "glibc"}},
            "tcmalloc": {"emulator": {"ovs_shards": 1, "ovs_allocator": "tcmalloc"}},
            "2-shards": {"emulator": {"ovs_shards": 2, "ovs_allocator": "tcmalloc"}},
            "4-shards": {"emulator": {"ovs_shards": 4, "ovs_allocator": "tcmalloc"}},
            "python-nic": {"transport": {"nic": "python"}},
            "compiled-nic": {"transport": {"nic": "compiled"}},
            "no-pollgate": {"emulator": {"ovs_pollgate": False}},
            "no-rxq-gate": {"emulator": {"ovs_pollgate": True}},
            "no-epoll": {"emulator": {"ovs_pollgate": True}},
            "no-focus": {"telemetry": {"focus_hz": 0}}}
#: Environment each variant runs with (ovs-vswitchd inherits it).
VARIANT_ENV = {"no-rxq-gate": {"POLLGATE_RXQ": "0"}, "no-epoll": {"POLLGATE_EPOLL": "0"}}


def fabric_spec(fabric: str) -> FabricSpec:
    """The FabricSpec of a preset or of one of FABRICS."""
    return fabric_from_dict(FABRICS[fabric]) if fabric in FABRICS else preset(fabric)


def topology_table(fabric: str) -> dict:
    """The [topology] table of ``fabric``: a preset's name, or one of FABRICS."""
    return dict(FABRICS[fabric]) if fabric in FABRICS else {"preset": fabric}


def workload_spec(fabric: str, workload: str, mbps: float, seconds: float,
                  tables: dict) -> dict:
    """A spec running ``workload`` over every server of ``fabric`` for about ``seconds``."""
    spec = fabric_spec(fabric)
    ranks, rails = spec.servers, spec.rails
    # A ring AllReduce sends 2(n-1)/n of the buffer per rank, an All2All (n-1)/n.
    a2a = all2all_bytes(ranks, rails, mbps, seconds)
    if workload == "all2all":
        job = {"collective": "all2all", "pxn": True, "sizes": [a2a]}
    elif workload == "ring":
        job = {"collective": "allreduce", "placement": "scattered", "sizes": [a2a // 2]}
    else:
        raise ValueError(f"workload: all2all or ring, got {workload!r}")
    return {
        "experiment": {"name": f"cap-{fabric}-{workload}-{mbps:g}".replace(".", "_"), "seed": 1},
        "topology": {**topology_table(fabric), "nic_mbps": mbps},
        "jobs": [{"name": workload, "servers": ranks, **job}],
        "limits": {"run_timeout_s": 30 * seconds + 60},
        **tables,
    }


@contextlib.contextmanager
def variant_env(variant: str) -> Iterator[None]:
    """Set the variant's environment (VARIANT_ENV) for the duration of one run."""
    saved = {key: os.environ.get(key) for key in VARIANT_ENV.get(variant, {})}
    os.environ.update(VARIANT_ENV.get(variant, {}))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def one_run(fabric: str, workload: str, mbps: float, seconds: float, variant: str) -> dict:
    """Run once; the figures of one repetition."""
    out = Path(tempfile.mkdtemp(prefix="railcc-cap-"))
    try:
        with variant_env(variant):
            run(from_dict(workload_spec(fabric, workload, mbps, seconds, VARIANTS[variant]),
                          "capacity"), out)
        summary = analyze(out)
    except Exception as exc:  # noqa: BLE001  (a failed run is a result too)
        return {"trusted": False, "why": f"run failed: {exc}"[:160]}
    counters = json.loads((out / "counters.json").read_text())
    measured = json.loads((out / "fidelity.json").read_text())
    split = measured.get("cpu_split_s", {})
    turns = list((measured.get("ovs_turns") or {}).values())
    # Frames per second of the job's traffic window (first send to last delivery); CPU
    # shares over the samplers' lifetime (older run folders have no CPU split).
    start, end = summary["rows"][0].get("window_s") or (0.0, 1.0)
    window = (end - start) or 1.0
    wall = split.get("wall") or window
    frames = sum(c.get("data_received", 0) for c in counters["agents"].values())
    cores = {k: v / wall for k, v in split.items() if k not in ("wall", "busy")}
    return {"trusted": summary["trusted"], "efficiency": summary["rows"][0]["efficiency"],
            "frames_per_s": frames / window, "loss_pct": summary["loss"]["loss_pct"],
            "cores": cores, "busy": split.get("busy", 0.0) / wall,
            # The slowest shard's main-loop turns (pollgate's stats; none without it).
            "turn_mean_ms": max((t["mean_us"] / 1e3 for t in turns), default=None),
            "turn_p99_ms": max((t["p99_us"] / 1e3 for t in turns), default=None),
            # The worst second as the verdict sees it (longer turns took <= 1 % of it).
            "turn_second_ms": max((max(series, default=0.0) for series in
                                   (measured.get("ovs_turn_ms_by_instance") or {}).values()),
                                  default=None),
            "why": "; ".join(summary["fidelity"]["reasons"])[:160], "folder": str(out)}


def median_row(runs: list[dict]) -> dict:
    """Medians over repetitions (CPU shares per key)."""
    done = [r for r in runs if "efficiency" in r]
    row = {"trusted": sum(r["trusted"] for r in runs), "n": len(runs),
           "why": next((r["why"] for r in runs if not r["trusted"]), "")}
    if done:
        row["efficiency"] = statistics.median(r["efficiency"] for r in done)
        row["frames_per_s"] = statistics.median(r["frames_per_s"] for r in done)
        row["busy"] = statistics.median(r["busy"] for r in done)
        for key in ("turn_mean_ms", "turn_p99_ms", "turn_second_ms"):
            values = [r[key] for r in done if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        keys = sorted({k for r in done for k in r["cores"]})
        row["cores"] = {k: statistics.median(r["cores"].get(k, 0.0) for r in done) for k in keys}
    return row


def split_text(cores: dict[str, float]) -> str:
    """'agents 0.41, ovs 0.22+0.19, kernel 0.05, ...' in shares of one core."""
    ovs = [v for k, v in sorted(cores.items()) if k.startswith("ovs-vswitchd")]
    parts = [f"agents {cores.get('agents', 0):.2f}", "ovs " + "+".join(f"{v:.2f}" for v in ovs),
             f"kernel {cores.get('kernel', 0):.2f}", f"harness {cores.get('harness', 0):.2f}",
             f"controller {cores.get('controller', 0):.2f}", f"rest {cores.get('rest', 0):.2f}"]
    return ", ".join(parts)


def main() -> None:
    """Sweep, print and record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fabrics", default="rail-2tier-small,rail-2tier")
    parser.add_argument("--workloads", default="all2all,ring")
    parser.add_argument("--rates", default="5,10,20,40")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default="glibc,tcmalloc")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    variants = args.variants.split(",")
    rows = []
    for fabric in args.fabrics.split(","):
        for workload in args.workloads.split(","):
            live = set(variants)
            for mbps in [float(rate) for rate in args.rates.split(",")]:
                if not live:
                    break
                runs: dict[str, list[dict]] = {v: [] for v in live}
                for _ in range(args.repeat):  # interleaved: variant A, B, A, B, ...
                    for variant in sorted(live):
                        runs[variant].append(one_run(fabric, workload, mbps, args.seconds,
                                                     variant))
                for variant in sorted(live):
                    row = {"fabric": fabric, "workload": workload, "mbps": mbps,
                           "variant": variant, **median_row(runs[variant])}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if row["trusted"] < row["n"]:
                        live.discard(variant)
    record(rows, args)


def record(rows: list[dict], args: argparse.Namespace) -> None:
    """Append the sweep to RESULTS.md."""
    cpu = cpu_model()
    lines = [f"\n## capacity.py, {datetime.date.today()} ({os.cpu_count()} cores, {cpu}, "
             f"kernel {platform.release()}, OVS userspace datapath)\n",
             "Command: `.venv/bin/python benchmarks/capacity.py " + " ".join(sys.argv[1:]) + "`\n",
             f"Median of {args.repeat} runs per row, variants interleaved. Frames/s = data "
             "frames received by all NICs per second of the job's traffic window. CPU = "
             "share of one core while the NICs ran. OVS turn = how long ovs-vswitchd's main "
             "loop took per turn (mean / p99 / the worst second's turn length that longer "
             "turns took at most 1 % of, which the verdict judges against a frame time; "
             "bucket upper bounds), the slowest shard's.\n",
             "| fabric | NICs | workload | NIC Mb/s | offered Gb/s | variant | trusted | "
             "efficiency | frames/s | machine busy | CPU split | OVS turn ms | why not |",
             "| --- | ---: | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | ---: "
             "| --- |"]
    for r in rows:
        spec = fabric_spec(r["fabric"])
        nics = spec.servers * spec.rails
        eff = f"{100 * r['efficiency']:.1f} %" if "efficiency" in r else "-"
        frames = f"{r['frames_per_s']:,.0f}" if "frames_per_s" in r else "-"
        busy = f"{100 * r['busy'] / (os.cpu_count() or 1):.0f} %" if "busy" in r else "-"
        turn = (f"{r['turn_mean_ms']:.2f} / {r['turn_p99_ms']:g}"
                if r.get("turn_p99_ms") is not None else "-")
        if r.get("turn_second_ms") is not None:
            turn += f" / {r['turn_second_ms']:g}"
        lines.append(f"| {r['fabric']} | {nics} | {r['workload']} | {r['mbps']:g} | "
                     f"{nics * r['mbps'] / 1000:.2f} | {r['variant']} | {r['trusted']}/{r['n']} | "
                     f"{eff} | {frames} | {busy} | {split_text(r.get('cores', {}))} | "
                     f"{turn} | {r['why']} |")
    best: dict[tuple, dict] = {}
    for r in rows:
        if r["trusted"] == r["n"]:
            key = (r["fabric"], r["workload"], r["variant"])
            if key not in best or r["mbps"] > best[key]["mbps"]:
                best[key] = r
    lines.append("\nLargest trusted NIC rate:")
    for (fabric, workload, variant), r in sorted(best.items()):
        spec = fabric_spec(fabric)
        nics = spec.servers * spec.rails
        lines.append(f"- {fabric} {workload}, {variant}: {r['mbps']:g} Mb/s per NIC "
                     f"({nics * r['mbps'] / 1000:.2f} Gb/s offered, "
                     f"{r.get('frames_per_s', 0):,.0f} frames/s)")
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
