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
import sys
import time
from pathlib import Path
from typing import Callable

from controllers.algorithms.registry import ANNOUNCING, NIC_CONGESTION_CONTROL
from experiments.analysis.analysis import RUN_FORMAT
from experiments.workload.faults import anchors_of_round
from experiments.workload.spec import Experiment
from fabric.measure import fidelity
from fabric.measure.counters import DropSnapshot, fidelity_measurements
from fabric.measure.captures import Captures
from fabric.measure.cpu import CpuSampler
from fabric.measure.machine import machine_info
from fabric.measure.paths import PathBook
from fabric.measure.ports import PortInfo, port_infos
from fabric.measure.turns import held, read_turns
from fabric.measure.telemetry import PortSampler
from fabric.net import ovs
from fabric.net.faults import FaultInjector
from fabric.net.network import Network
from fabric.nic.fleet import AgentFleet, NicSettings
from topologies import Topology, build
from topologies.export import save

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def run(experiment: Experiment, out_dir: Path, progress: Progress | None = None,
        after_start: Callable[[Network], None] | None = None,
        forced_over_capacity: str | None = None) -> Path:
    """Run the experiment on a fresh fabric; returns the run folder (analysis not included).

    ``forced_over_capacity``: why the capacity check refused the run, when the user
    forced it anyway (recorded in fidelity.json; the verdict is then untrusted).

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
                  controller_options={"seed": experiment.seed},
                  ovs_shards=experiment.ovs_shards or None,
                  ovs_allocator=experiment.ovs_allocator,
                  ovs_pollgate=experiment.ovs_pollgate)
    _write_manifest(experiment, topology, net, out_dir)
    _write_json(out_dir / "transfers.json", records)
    with net:
        if after_start:
            after_start(net)
        ports = port_infos(net)
        switch_ports = [p for p in ports if p.on_switch]
        drops_before = DropSnapshot.take(net)
        fleet = AgentFleet(net, nic_settings(experiment), out_dir)
        faults = FaultInjector(net, experiment.faults, out_dir / "faults.jsonl")
        paths = PathBook(net.topology, net.plan.switch_intfs, net.vswitchd_sockets())
        failure: BaseException | None = None
        failed: dict | None = None
        number = 0
        try:
            fleet.start()
            by_netns: dict[str | None, set[str]] = {}
            for port in switch_ports:
                by_netns.setdefault(port.netns, set()).add(port.dev)
            sampler = PortSampler(by_netns, experiment.telemetry_rate_hz,
                                  experiment.telemetry_focus_hz,
                                  {port.dev: port.capacity_mbps for port in switch_ports})
            groups = {"agents": [proc.pid for proc in fleet.procs.values()],
                      "controller": [net.controller.proc.pid] if net.controller else [],
                      "harness": [os.getpid()]}
            turn_stats = {f"ovs{shard.index}": shard.turn_stats for shard in net.shards
                          if shard.pollgate}
            turns_before = {name: read_turns(path) for name, path in turn_stats.items()}
            ovs_turns: dict[str, dict[str, float]] = {}
            with CpuSampler(net.vswitchd_pids(), groups=groups,
                            turn_stats=turn_stats) as cpu, sampler, faults, \
                    Captures(net, experiment.captures, out_dir):
                try:
                    for number, ((phase, iteration), rows) in enumerate(sorted(rounds.items()),
                                                                        1):
                        size = rows[0]["collective_size"]
                        progress(f"round {number}/{len(rounds)}: {_human(size)} iteration "
                                 f"{iteration + 1}, {len(rows)} messages")
                        anchors = anchors_of_round(phase, iteration,
                                                   sorted({r["job"] for r in rows}), number == 1)
                        fleet.run_round(rows, timeout_s=experiment.run_timeout_s,
                                        starting=lambda ns, a=anchors: faults.anchor(a, ns))
                        with held(turn_stats.values()):  # a dump, no frame in flight
                            paths.read(number)
                    faults.close()  # actions not due yet are logged as not reached
                except BaseException as exc:  # timeout, a dead agent, Ctrl-C: keep the records
                    failure = exc
                    failed = {"error": f"{type(exc).__name__}: {exc}".rstrip(": "),
                              "round": number, "at": datetime.datetime.now().isoformat(
                                  timespec="milliseconds")}
                    progress(f"run failed in round {number}: {failed['error']}; keeping "
                             "what the agents recorded")
                # Inside the samplers: late duplicate ACKs dropped while the agents
                # quiesce must still be counted.
                counters = fleet.finish(tolerant=failure is not None)
                ovs_turns = _turns_since(turn_stats, turns_before)
        finally:
            fleet.stop()
        paths.write(out_dir / "paths.json")
        if net.pfc:
            net.pfc.stop()
            net.pfc.write(out_dir / "pfc.json")
        drops = DropSnapshot.take(net).since(drops_before)
        _write_ports(out_dir / "ports.csv", switch_ports, sampler,
                     _rate_changes(net.topology, switch_ports, faults),
                     net.pfc.paused_before if net.pfc else None)
        switch_drops = sum(s[-1].drops - s[0].drops for s in sampler.series.values() if s)
        _write_json(out_dir / "counters.json", {
            "agents": counters, "qdisc_drops_switch": switch_drops, **drops})
        _write_json(out_dir / "fidelity.json", {
            **fidelity_measurements(net, cpu, sampler),
            "ovs_turns": ovs_turns,
            "nic_window_packets": (experiment.transport.window_packets
                                   if experiment.transport.kind == "roce" else None),
            "forced_over_capacity": forced_over_capacity, "failed": failed})
    if failure is not None:
        raise failure
    verdict = fidelity.judge_folder(out_dir)
    progress("trusted" if verdict.trusted else "NOT trusted: " + "; ".join(verdict.reasons))
    return out_dir


def nic_settings(experiment: Experiment) -> NicSettings:
    """What the NIC agents need to know of an experiment (plain data, no spec objects)."""
    transport = experiment.transport
    nic_cc = NIC_CONGESTION_CONTROL.get(experiment.algorithm) if transport.kind == "roce" \
        else None
    return NicSettings(
        transport=transport.kind, window_packets=transport.window_packets,
        rto_ms=transport.rto_ms,
        ack_every=(min(transport.ack_every, experiment.swift.ack_every) if nic_cc == "swift"
                   else transport.ack_every),
        delay_sample_every=experiment.delay_sample_every, salt=experiment.seed,
        announce=transport.kind == "roce" and experiment.algorithm in ANNOUNCING,
        datapath=transport.nic,
        dcqcn=experiment.dcqcn.to_dict() if nic_cc == "dcqcn" else None,
        swift=experiment.swift.to_dict() if nic_cc == "swift" else None)


def _human(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, default=str))


def _write_manifest(experiment: Experiment, topology: Topology, net: Network, out: Path) -> None:
    save(topology, out / "topology.json")
    machine = machine_info()
    _write_json(out / "manifest.json", {
        "spec": experiment.to_dict(), "seed": experiment.seed, "algorithm": experiment.algorithm,
        "format": RUN_FORMAT, "run_prefix": net.prefix, "topology_name": topology.name,
        "datapath": net.datapath, "ovs_shards": len(net.shards),
        "ovs_allocator": net.shards[0].allocator, "ovs_pollgate": net.shards[0].pollgate,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {"railcc": _railcc_version(), "python": platform.python_version(),
                     "ovs": machine["ovs"], "kernel": machine["kernel"]},
        "machine": {key: machine[key] for key in ("cores", "cpu", "memory_gib")},
        "command": " ".join(sys.argv),
    })


def _railcc_version() -> str:
    try:
        from importlib.metadata import version
        return version("railcc")
    except Exception:  # noqa: BLE001  (not installed as a distribution)
        return "unknown"


def _rate_changes(topology: Topology, ports: list[PortInfo],
                  faults: FaultInjector) -> dict[str, list[tuple[float, float]]]:
    """Per switch port (dev) that a fault slowed or took down, its rate share over time."""
    factors = faults.rate_factors()
    faulted = {(end.node, end.port): factors[index] for index in factors
               for end in topology.links[index].ends()}
    return {port.dev: faulted[(port.node, port.port)] for port in ports
            if (port.node, port.port) in faulted}


def _capacity_at(capacity: float, changes: list[tuple[float, float]], when: float) -> float:
    """A port's rate at ``when`` (time.time s), after the fault changes before it."""
    share = 1.0
    for at, factor in changes:
        if at <= when:
            share = factor
    return capacity * share


def _turns_since(turn_stats: dict[str, Path], before: dict) -> dict[str, dict[str, float]]:
    """Each shard's main-loop turns over the traffic (pollgate's stats; {} without it)."""
    found = {}
    for name, path in turn_stats.items():
        after, start = read_turns(path), before.get(name)
        if after is not None and start is not None:
            found[name] = after.since(start).summary()
    return found


def _write_ports(path: Path, ports: list[PortInfo], sampler: PortSampler,
                 changes: dict[str, list[tuple[float, float]]],
                 paused: Callable[[str, float], float] | None = None) -> None:
    """ports.csv; ``capacity_mbps`` is each sample's rate (a fault may slow or stop a link),
    ``paused_s`` the time PFC had held the queue paused by then (``paused(dev, t)``)."""
    by_dev = {p.dev: p for p in ports}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_s", "node", "port", "peer", "tier", "capacity_mbps", "sent_bytes",
                         "sent_packets", "drops", "backlog_bytes", "paused_s"])
        for dev, series in sorted(sampler.series.items()):
            info = by_dev[dev]
            for s in series:
                capacity = _capacity_at(info.capacity_mbps, changes.get(dev, []), s.time)
                writer.writerow([f"{s.time:.4f}", info.node, info.port, info.peer, info.tier,
                                 round(capacity, 6), s.sent_bytes, s.sent_packets, s.drops,
                                 s.backlog_bytes,
                                 round(paused(dev, s.time), 4) if paused else 0])


