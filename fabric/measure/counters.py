"""Drop counters of a live fabric, read before and after a run (counters.json), and the
raw measurements the fidelity verdict judges (fidelity.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabric.measure.cpu import CpuSampler
from fabric.measure.telemetry import PortSampler, read_queues
from fabric.net import ovs
from fabric.net.netns import link_drops
from fabric.net.network import Network


def host_drops(net: Network) -> dict[str, int]:
    """Cumulative drops at every server NIC, by 'server:intf': its egress queue plus what
    the interface itself dropped (kernel rx/tx dropped counters)."""
    drops: dict[str, int] = {}
    for server in net.topology.servers():
        netns = net.netns(server.name)
        for dev, sample in read_queues(netns).items():
            drops[f"{server.name}:{dev}"] = sample.drops
        for intf, dropped in link_drops(netns).items():
            key = f"{server.name}:{intf}"
            drops[key] = drops.get(key, 0) + dropped
    return drops


@dataclass(frozen=True)
class DropSnapshot:
    """Every drop counter outside the switch queues at one moment."""

    host: dict[str, int]
    datapath: dict[str, int]
    sockets: int

    @classmethod
    def take(cls, net: Network) -> "DropSnapshot":
        """Read the host, OVS interface and OVS socket drop counters now."""
        return cls(host_drops(net), ovs.interface_drops(net.prefix, [s.db for s in net.shards]),
                   ovs.socket_drops([s.netns for s in net.shards]))

    def since(self, before: "DropSnapshot") -> dict[str, Any]:
        """The counters.json drop fields accumulated between ``before`` and this snapshot."""
        host = {k: v - before.host.get(k, 0) for k, v in self.host.items()}
        datapath = {k: v - before.datapath.get(k, 0) for k, v in self.datapath.items()
                    if v > before.datapath.get(k, 0)}
        sockets = self.sockets - before.sockets
        return {"qdisc_drops_host": sum(host.values()), "host_drops_by_port": host,
                "datapath_drops": sum(datapath.values()) + sockets,
                "ovs_socket_drops": sockets, "datapath_drops_by_port": datapath}


def fidelity_measurements(net: Network, cpu: CpuSampler, sampler: PortSampler) -> dict[str, Any]:
    """What fidelity.json records for the verdict: CPU samples (the busiest ovs-vswitchd's
    share of a core per sample, and each one's), telemetry rate, OVS send buffer."""
    userspace = net.datapath == "netdev" and bool(sampler.series)
    return {
        "cpu_busy": [round(b, 3) for b in cpu.machine_busy],
        "ovs_busy": [round(b, 3) for b in cpu.ovs_busy],
        "ovs_busy_by_instance": {name: [round(b, 3) for b in series]
                                 for name, series in sorted(cpu.ovs_busy_by.items())},
        "ovs_turn_ms_by_instance": {name: [round(t, 3) for t in series]
                                    for name, series in sorted(cpu.ovs_turn_ms_by.items())},
        "telemetry_hz": round(sampler.achieved_rate_hz(), 2),
        "telemetry_target_hz": sampler.rate_hz,
        "telemetry_focus_hz": sampler.focus_hz,
        "telemetry_focus_reads": sampler.focus_reads,
        "telemetry_focus_error": sampler.focus_error,
        "ovs_send_buffer_bytes": (ovs.send_buffer_bytes([s.netns for s in net.shards])
                                  if userspace else None),
        "peak_total_backlog_bytes": sampler.peak_total_backlog(),
        "cpu_split_s": cpu.split,
    }
