"""One experiment run: fabric up, agents replay the collectives, telemetry, run folder.

The run folder's files are described in docs/run-folder.md; analysis and the
report read only those files.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from experiments.run_agents import AgentFleet
from experiments.spec import Experiment
from fabric import fidelity, ovs
from fabric.network import Network
from fabric.port_map import PortInfo, port_infos
from fabric.telemetry import PortSampler, read_queues
from topologies import Topology, build
from topologies.export import save

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def run(experiment: Experiment, out_dir: Path, progress: Progress | None = None,
        after_start: Callable[[Network], None] | None = None) -> Path:
    """Run the experiment on a fresh fabric; returns the run folder (analysis not included).

    ``after_start`` is called with the live network before traffic starts
    (tests use it to reshape a link or shrink a buffer).
    """
    progress = progress or (lambda message: log.info("%s", message))
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    topology = build(experiment.fabric)
    records = experiment.transfer_records(topology)
    qps = {job.name: job.qps_per_connection for job in experiment.jobs}
    for record in records:
        record["qps"] = qps[record["job"]]
    rounds: dict[tuple[int, int], list[dict]] = {}
    for record in records:
        rounds.setdefault((record["phase"], record["iteration"]), []).append(record)
    net = Network(topology, experiment.algorithm, run_dir=out_dir, progress=progress,
                  stats_interval=experiment.stats_interval_ms / 1000,
                  controller_options={"seed": experiment.seed})
    _write_manifest(experiment, topology, net, out_dir)
    _write_json(out_dir / "transfers.json", records)
    with net:
        if after_start:
            after_start(net)
        ports = port_infos(net)
        switch_ports = [p for p in ports if p.netns is None]
        host_before = _host_drops(net)
        ovs_before = ovs.interface_drops(net.prefix)
        sockets_before = ovs.socket_drops()
        fleet = AgentFleet(net, experiment, out_dir)
        try:
            fleet.start()
            sampler = PortSampler({p.dev for p in switch_ports}, experiment.telemetry_rate_hz)
            with fidelity.CpuSampler() as cpu, sampler:
                for number, ((phase, iteration), rows) in enumerate(sorted(rounds.items()), 1):
                    size = rows[0]["collective_size"]
                    progress(f"round {number}/{len(rounds)}: {_human(size)} iteration "
                             f"{iteration + 1}, {len(rows)} messages")
                    fleet.run_round(rows, timeout_s=experiment.run_timeout_s)
                # Inside the samplers: late duplicate ACKs dropped while the agents
                # quiesce must still be counted.
                counters = fleet.finish()
        finally:
            fleet.stop()
        host_drops = {k: v - host_before.get(k, 0) for k, v in _host_drops(net).items()}
        socket_drops = ovs.socket_drops() - sockets_before
        datapath_drops = {k: v - ovs_before.get(k, 0)
                          for k, v in ovs.interface_drops(net.prefix).items()
                          if v > ovs_before.get(k, 0)}
        _write_ports(out_dir / "ports.csv", switch_ports, sampler)
        switch_drops = sum(s[-1].drops - s[0].drops for s in sampler.series.values() if s)
        _write_json(out_dir / "counters.json", {
            "agents": counters, "qdisc_drops_switch": switch_drops,
            "qdisc_drops_host": sum(host_drops.values()), "host_drops_by_port": host_drops,
            "datapath_drops": sum(datapath_drops.values()) + socket_drops,
            "ovs_socket_drops": socket_drops,
            "datapath_drops_by_port": datapath_drops})
        _write_fidelity(out_dir, cpu, switch_ports, sampler)
    return out_dir


def _human(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, default=str))


def _write_manifest(experiment: Experiment, topology: Topology, net: Network, out: Path) -> None:
    save(topology, out / "topology.json")
    ovs_version = subprocess.run(["ovs-vsctl", "--version"], capture_output=True,
                                 text=True).stdout.split("\n", 1)[0]
    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    _write_json(out / "manifest.json", {
        "spec": experiment.to_dict(), "seed": experiment.seed, "algorithm": experiment.algorithm,
        "run_prefix": net.prefix, "topology_name": topology.name, "datapath": net.datapath,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {"railcc": _railcc_version(), "python": platform.python_version(),
                     "ovs": ovs_version, "kernel": platform.release()},
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model,
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                        / 2**30, 1)},
        "command": " ".join(sys.argv),
    })


def _railcc_version() -> str:
    try:
        from importlib.metadata import version
        return version("railcc")
    except Exception:  # noqa: BLE001  (not installed as a distribution)
        return "unknown"


def _host_drops(net: Network) -> dict[str, int]:
    """Cumulative drops at every server NIC, by 'server:intf': its egress queue plus what
    the interface itself dropped (kernel rx/tx dropped counters)."""
    drops: dict[str, int] = {}
    for server in net.topology.servers():
        netns = net.netns(server.name)
        for dev, sample in read_queues(netns).items():
            drops[f"{server.name}:{dev}"] = sample.drops
        links = json.loads(subprocess.run(["ip", "-n", netns, "-s", "-j", "link", "show"],
                                          capture_output=True, text=True, check=True).stdout)
        for link in links:
            stats = link.get("stats64", {})
            key = f"{server.name}:{link['ifname']}"
            drops[key] = (drops.get(key, 0) + stats.get("rx", {}).get("dropped", 0)
                          + stats.get("tx", {}).get("dropped", 0))
    return drops


def _write_ports(path: Path, ports: list[PortInfo], sampler: PortSampler) -> None:
    by_dev = {p.dev: p for p in ports}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_s", "node", "port", "peer", "tier", "capacity_mbps", "sent_bytes",
                         "sent_packets", "drops", "backlog_bytes"])
        for dev, series in sorted(sampler.series.items()):
            info = by_dev[dev]
            for s in series:
                writer.writerow([f"{s.time:.4f}", info.node, info.port, info.peer, info.tier,
                                 info.capacity_mbps, s.sent_bytes, s.sent_packets, s.drops,
                                 s.backlog_bytes])


def _write_fidelity(out: Path, cpu: fidelity.CpuSampler, ports: list[PortInfo],
                    sampler: PortSampler) -> None:
    intervals = []
    capacity = {p.dev: p.capacity_mbps for p in ports}
    for dev, series in sampler.series.items():
        for first, second in zip(series, series[1:]):
            intervals.append(fidelity.PortInterval(
                dev, second.time - first.time, second.sent_bytes - first.sent_bytes,
                capacity[dev], first.backlog_bytes > 0 and second.backlog_bytes > 0))
    shortfalls = fidelity.rate_shortfalls(intervals)
    trusted, reasons = fidelity.verdict(cpu.machine_busy, cpu.ovs_busy, shortfalls)
    send_buffer = ovs.send_buffer_bytes() if _datapath_is_userspace(ports) else None
    peak = _peak_total_backlog(sampler)
    if send_buffer is not None and peak > 0.8 * send_buffer:
        trusted = False
        reasons.append(f"OVS send buffer nearly exhausted: {peak} bytes queued at once, buffer "
                       f"{send_buffer} (start OVS after raising net.core.wmem_default)")
    if sampler.achieved_rate_hz() < 0.8 * sampler.rate_hz:
        reasons.append(f"telemetry fell behind: {sampler.achieved_rate_hz():.1f} Hz of "
                       f"{sampler.rate_hz:g} Hz")
        trusted = False
    _write_json(out / "fidelity.json", {
        "trusted": trusted, "reasons": reasons,
        "cpu_busy": [round(b, 3) for b in cpu.machine_busy],
        "ovs_busy": [round(b, 3) for b in cpu.ovs_busy],
        "link_rate_errors": shortfalls,
        "telemetry_hz": round(sampler.achieved_rate_hz(), 2),
        "ovs_send_buffer_bytes": send_buffer, "peak_total_backlog_bytes": peak,
    })


def _datapath_is_userspace(ports: list[PortInfo]) -> bool:
    return ovs.datapath_type() == "netdev" and bool(ports)


def _peak_total_backlog(sampler: PortSampler) -> int:
    """Largest sum of all switch queues' backlogs seen in one telemetry round."""
    rounds: dict[int, int] = {}
    for series in sampler.series.values():
        for index, sample in enumerate(series):
            rounds[index] = rounds.get(index, 0) + sample.backlog_bytes
    return max(rounds.values(), default=0)

