"""Raw forwarding ceiling: what the datapath delivers with no fidelity guard and fast links.

Delivered = UDP payload received (datagrams x 8,900 B); frames/s = datagrams received per s.

    .venv/bin/python benchmarks/ceiling.py [--repeat 3] [--variants glibc,tcmalloc,2-shards]

`rail-2tier-small` with every link at 20 Gb/s (so no shaping limits it), the
ecmp controller, and four iperf3 UDP flows of 8,900-byte datagrams, one per
rail, each from a pod-0 server to a pod-1 server (ToR, spine, ToR: three
switches), offered far above what the machine can forward. Reports the
delivered total (receiver side), frames/s and frame-hops/s, and each
ovs-vswitchd's CPU; variants interleaved, medians. This is the ceiling the
trusted capacity is compared with (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.measure.cpu import process_cpu_s  # noqa: E402
from fabric.net.network import Network  # noqa: E402
from fabric.net.procs import stop_children  # noqa: E402
from topologies import build, preset  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
VARIANTS = {"glibc": (1, "glibc"), "tcmalloc": (1, "tcmalloc"), "2-shards": (2, "tcmalloc"),
            "4-shards": (4, "tcmalloc")}
PAYLOAD = 8900
SECONDS = 4


def one(variant: str) -> dict:
    """Build the fabric, run the four flows, return delivered Gb/s and OVS CPU."""
    import dataclasses
    spec = dataclasses.replace(preset("rail-2tier-small"), nic_mbps=20000.0)
    topology = build(spec)
    shards, allocator = VARIANTS[variant]
    with Network(topology, "ecmp", ovs_shards=shards, ovs_allocator=allocator) as net:
        pairs = [(f"h{r + 1}", f"h{r + 5}", r) for r in range(spec.rails)]
        servers, clients = [], []
        for i, (src, dst, rail) in enumerate(pairs):
            dst_ip = topology.nics_of(dst)[rail].ip
            servers.append(net.popen(dst, ["iperf3", "-s", "-1", "-J", "-B", dst_ip,
                                           "-p", str(5201 + i)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True))
        time.sleep(0.5)
        pids = net.vswitchd_pids()
        cpu0, wall0 = {n: process_cpu_s(p) for n, p in pids.items()}, time.monotonic()
        for i, (src, dst, rail) in enumerate(pairs):
            dst_ip = topology.nics_of(dst)[rail].ip
            src_ip = topology.nics_of(src)[rail].ip
            clients.append(net.popen(src, ["iperf3", "-u", "-c", dst_ip, "-B", src_ip,
                                           "-p", str(5201 + i), "-b", "4G", "-l", str(PAYLOAD),
                                           "-t", str(SECONDS)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proc in clients:
            proc.wait(timeout=SECONDS + 30)
        cpu = {n: (process_cpu_s(p) - cpu0[n]) / (time.monotonic() - wall0)
               for n, p in pids.items()}
        delivered = 0.0
        for proc in servers:
            try:
                out, _ = proc.communicate(timeout=10)
                total = json.loads(out)["end"]["sum"]
                # iperf3 3.12's UDP server reports bytes = 0: count received datagrams.
                received = total["packets"] - total["lost_packets"]
                delivered += received * PAYLOAD * 8 / total["seconds"] / 1e9
            except (subprocess.TimeoutExpired, ValueError, KeyError) as exc:
                print(f"iperf3 server gave no result: {exc!r}", file=sys.stderr)
                stop_children([proc], 1.0)
    frames = delivered * 1e9 / 8 / PAYLOAD
    return {"gbps": delivered, "frames_per_s": frames, "frame_hops_per_s": 3 * frames,
            "ovs": cpu}


def main() -> None:
    """Measure each variant ``--repeat`` times, interleaved; print and record medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default="glibc,tcmalloc,2-shards")
    args = parser.parse_args()
    variants = args.variants.split(",")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for variant in variants:
            runs[variant].append(one(variant))
            print(variant, json.dumps(runs[variant][-1]), flush=True)
    lines = [f"\n## ceiling.py, {datetime.date.today()} ({os.cpu_count()} cores, "
             f"kernel {platform.release()}, OVS userspace datapath)\n",
             "Command: `.venv/bin/python benchmarks/ceiling.py " + " ".join(sys.argv[1:]) + "`\n",
             f"rail-2tier-small, every link 20 Gb/s, ecmp, 4 iperf3 UDP flows of {PAYLOAD} B "
             f"(one per rail, pod 0 -> pod 1: 3 switches), {SECONDS} s; median of "
             f"{args.repeat}, variants interleaved.\n",
             "| variant | delivered Gb/s | frames/s | frame-hops/s | ovs-vswitchd CPU (cores) |",
             "| --- | ---: | ---: | ---: | --- |"]
    for variant, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows)
               for k in ("gbps", "frames_per_s", "frame_hops_per_s")}
        names = sorted(rows[0]["ovs"])
        cpu = " + ".join(f"{statistics.median(r['ovs'][n] for r in rows):.2f}" for n in names)
        lines.append(f"| {variant} | {med['gbps']:.2f} | {med['frames_per_s']:,.0f} | "
                     f"{med['frame_hops_per_s']:,.0f} | {cpu} |")
    print("\n".join(lines))
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
