"""Build+start and stop time of railcc fabrics beside stock Mininet (TCLink), same run.

    .venv/bin/python benchmarks/build_fabric.py [--repeat 3] [--skip-stock]
        [--fabrics rail-2tier,rail-64x8,rail-64x8-8pods]

Fabrics: the `rail-2tier` preset, a 64 servers x 8 rails fabric in 1 pod (8 ToRs,
8 spines: 576 links, as PLATFORM.md measured) and the same servers in 8 pods (64 ToRs,
8 spines: 1,024 links; the capacity issue's 64 x 8 ring runs on it). railcc is timed with
no controller (plumbing + OVS + shaping + read-back) and with the `ecmp`
controller having configured every switch. Memory = drop of MemAvailable
while the fabric runs. Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.measure.machine import cpu_model  # noqa: E402
from fabric.net import ovs  # noqa: E402
from fabric.net.procs import pid_alive  # noqa: E402
from fabric.net.network import Network  # noqa: E402
from topologies import PRESETS, Topology, build, from_dict, load  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def mem_available_mib() -> float:
    """MemAvailable from /proc/meminfo, MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


#: The benchmarks' fabrics beyond the presets, as [topology] tables (capacity.py too).
FABRICS = {
    "rail-64x8": {"name": "rail-64x8", "rails": 8, "servers_per_pod": 64, "pods": 1,
                  "spines": 8, "description": "64 servers x 8 rails, 1 pod, 8 spines"},
    "rail-64x8-8pods": {"name": "rail-64x8-8pods", "rails": 8, "servers_per_pod": 8,
                        "pods": 8, "spines": 8,
                        "description": "64 servers x 8 rails in 8 pods, 8 spines"},
}


def fabrics(names: list[str]) -> list[Topology]:
    """The fabrics to time, by name: a preset or one of FABRICS."""
    unknown = [name for name in names if name not in FABRICS and name not in PRESETS]
    if unknown:
        raise SystemExit(f"build_fabric: unknown fabric(s) {', '.join(unknown)}; "
                         f"known: {', '.join([*PRESETS, *FABRICS])}")
    return [build(from_dict(FABRICS[name])) if name in FABRICS else load(name)
            for name in names]


def ovs_settled(bridges: list[str], daemons: list[int] = ()) -> float:
    """Seconds until ovs-vswitchd has released every bridge's own interface (stock Mininet)
    or the run's own OVS shards have exited (railcc)."""
    started = time.monotonic()
    while (set(bridges) & set(os.listdir("/sys/class/net"))
           or any(pid_alive(pid) for pid in daemons)):
        time.sleep(0.05)
    return time.monotonic() - started


def time_railcc(topology: Topology, algorithm: str | None) -> tuple[float, ...]:
    """(start s, stop s, OVS settled s, memory MiB) of one railcc Network."""
    mem_before = mem_available_mib()
    started = time.monotonic()
    net = Network(topology, algorithm)
    net.start()
    start_s = time.monotonic() - started
    time.sleep(1.0)
    memory = mem_before - mem_available_mib()
    daemons = list(net.vswitchd_pids().values())
    started = time.monotonic()
    net.stop(settle=False)
    stop_s = time.monotonic() - started
    return start_s, stop_s, stop_s + ovs_settled([], daemons), memory


def time_stock_mininet(topology: Topology) -> tuple[float, ...]:
    """(start s, stop s, OVS settled s, memory MiB) of stock Mininet, TCLink, userspace OVS."""
    from functools import partial

    from mininet.link import TCLink
    from mininet.net import Mininet
    from mininet.node import OVSSwitch
    from mininet.topo import Topo

    class Stock(Topo):
        def build(self) -> None:
            names = {}
            for i, switch in enumerate(topology.switches()):
                names[switch.name] = self.addSwitch(f"zb{i}", dpid=f"{switch.dpid:016x}")
            for server in topology.servers():
                names[server.name] = self.addHost(server.name)
            for link in topology.links:
                self.addLink(names[link.a.node], names[link.b.node], bw=link.mbps)

    switch = partial(OVSSwitch, datapath="user", failMode="secure", protocols="OpenFlow13")
    mem_before = mem_available_mib()
    started = time.monotonic()
    net = Mininet(topo=Stock(), switch=switch, link=TCLink, controller=None,
                  autoSetMacs=True)
    net.start()
    start_s = time.monotonic() - started
    time.sleep(1.0)
    memory = mem_before - mem_available_mib()
    started = time.monotonic()
    net.stop()
    stop_s = time.monotonic() - started
    return start_s, stop_s, stop_s + ovs_settled([s.name for s in net.switches]), memory


def median_of(func, repeat: int) -> tuple[float, ...]:
    """Median of each figure over ``repeat`` runs."""
    runs = [func() for _ in range(repeat)]
    return tuple(statistics.median(values) for values in zip(*runs))


def main() -> None:
    """Run the benchmark, print and record the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-stock", action="store_true", help="do not time stock Mininet")
    parser.add_argument("--fabrics", default="rail-2tier,rail-64x8",
                        help="comma-separated: rail-2tier, rail-64x8, rail-64x8-8pods")
    args = parser.parse_args()
    topologies = fabrics(args.fabrics.split(","))
    ovs.ensure_daemon()
    rows = []
    for topology in topologies:
        label = f"{topology.name} ({len(topology.links)} links)"
        variants = [("railcc, no controller", lambda t=topology: time_railcc(t, None)),
                    ("railcc + ecmp ready", lambda t=topology: time_railcc(t, "ecmp"))]
        if not args.skip_stock:
            variants.append(("stock Mininet TCLink", lambda t=topology: time_stock_mininet(t)))
        for variant, func in variants:
            start_s, stop_s, settled_s, memory = median_of(func, args.repeat)
            rows.append((label, variant, start_s, stop_s, settled_s, memory))
            print(f"{label:<28} {variant:<22} start {start_s:6.2f} s  stop {stop_s:6.2f} s  "
                  f"OVS settled {settled_s:6.2f} s  memory {memory:6.0f} MiB", flush=True)
    record(rows, args.repeat)


def record(rows: list[tuple], repeat: int) -> None:
    """Append the table, with machine and date, to RESULTS.md."""
    cpu = cpu_model()
    lines = [
        f"\n## build_fabric.py, {datetime.date.today()} ({os.cpu_count()} cores, {cpu}, "
        f"kernel {platform.release()}, OVS {ovs.datapath_type()} datapath)\n",
        f"Median of {repeat} runs each, all measured in the same run.\n",
        "Stop = until the call returned (the run's namespaces and interfaces are gone, its",
        "OVS shards SIGKILLed); OVS settled = until those ovs-vswitchd processes have",
        "exited (railcc: closing a socket per port) or, for stock Mininet, the system",
        "ovs-vswitchd released the bridges' own interfaces (~70 ports per second).\n",
        "Command: `.venv/bin/python benchmarks/build_fabric.py " + " ".join(sys.argv[1:]) + "`\n",
        "| fabric | variant | start (s) | stop (s) | OVS settled (s) | memory (MiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {f} | {v} | {a:.2f} | {b:.2f} | {c:.2f} | {m:.0f} |"
              for f, v, a, b, c, m in rows]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nFigures recorded by the scripts in "
                           "benchmarks/, newest last.\n")
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
