"""Controller core speed: paths and max-min rates for a 2,048-server x 8-rail Clos.

One flow per NIC (16,384 flows), each to the same-rail NIC of the server one pod
further, so every flow crosses the spines. Measured, median of 3:
- routes: building the algorithm (valley-free routes of 544 switches);
- paths: 16,384 FLOW_REQUESTs through `AdaptiveAlgorithm.flow_request` (least-loaded
  path among 32 spines, exact-match rules, grant frame), the real code path;
- max-min: `ProactiveAlgorithm.allocate` over all flows at once.
Goal (issue): paths + max-min <= 1 s. Appends a table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controllers.algorithms.adaptive import AdaptiveAlgorithm  # noqa: E402
from controllers.algorithms.proactive import ProactiveAlgorithm  # noqa: E402
from fabric.nic import wire  # noqa: E402
from topologies import build, from_dict  # noqa: E402

SPEC = {"name": "clos-2048x8", "rails": 8, "servers_per_pod": 32, "pods": 64, "spines": 32,
        "nic_mbps": 400_000, "buffer_bytes": 1_000_000}
RESULTS = Path(__file__).with_name("RESULTS.md")


def requests(topology) -> list[wire.FlowRequest]:
    """One request per NIC, to the same-rail NIC one pod further."""
    servers = [s.name for s in topology.servers()]
    per_pod = topology.spec.servers_per_pod
    nics = {(nic.server, nic.rail): nic for nic in topology.nics}
    out = []
    for index, server in enumerate(servers):
        peer = servers[(index + per_pod) % len(servers)]
        for rail in range(topology.spec.rails):
            src, dst = nics[(server, rail)], nics[(peer, rail)]
            qp = 100 + len(out)
            out.append(wire.FlowRequest(qp, src.ip, dst.ip, 1 << 20,
                                        wire.udp_source_port(qp), 1))
    return out


def once(topology, flows) -> dict[str, float]:
    """Seconds for routes, paths and max-min in one fresh controller core."""
    start = time.perf_counter()
    adaptive = AdaptiveAlgorithm(topology)
    routes = time.perf_counter() - start
    start = time.perf_counter()
    for request in flows:
        adaptive.flow_request(request, 0.0)
    paths = time.perf_counter() - start
    proactive = ProactiveAlgorithm(topology)
    proactive.flows = adaptive.flows
    start = time.perf_counter()
    rates = proactive.allocate()
    maxmin = time.perf_counter() - start
    assert len(rates) == len(flows) and min(rates.values()) > 0
    return {"routes": routes, "paths": paths, "maxmin": maxmin}


def main() -> None:
    """Measure three times, print and record the medians."""
    topology = build(from_dict(SPEC))
    flows = requests(topology)
    runs = [once(topology, flows) for _ in range(3)]
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    total = median["paths"] + median["maxmin"]
    print(f"{len(flows)} flows, {len(topology.switches())} switches, {len(topology.links)} links")
    for key, value in median.items():
        print(f"{key:>8}: {value:.3f} s (runs: {', '.join(f'{r[key]:.3f}' for r in runs)})")
    print(f"paths + max-min: {total:.3f} s (goal <= 1 s)")
    with RESULTS.open("a") as handle:
        handle.write(
            f"\n## controller_core.py, {datetime.date.today()} ({os.cpu_count()} cores)\n\n"
            f"{len(flows)} flows (one per NIC) on a 2,048 x 8 Clos: {len(topology.switches())} "
            f"switches, {len(topology.links)} links. Median of 3, seconds.\n\n"
            "| routes (build) | paths (16,384 flow_request) | max-min (all flows) | "
            "paths + max-min |\n| ---: | ---: | ---: | ---: |\n"
            f"| {median['routes']:.3f} | {median['paths']:.3f} | {median['maxmin']:.3f} | "
            f"{total:.3f} |\n")


if __name__ == "__main__":
    main()
