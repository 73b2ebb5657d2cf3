"""Where PFC acts in a fabric: its queues, their thresholds, its gates, who feeds whom."""

from __future__ import annotations

from dataclasses import dataclass

from fabric.net.pfc.gates import Gate
from fabric.net.pfc.policy import Thresholds, thresholds
from fabric.net.plumbing import Plan
from topologies import Topology


@dataclass(frozen=True)
class Layout:
    """A fabric's PFC plan, by name: a switch interface's own (unique in a run), or
    "server:interface" for a server's end.

    ``limits``: every switch egress queue's thresholds; ``gates``: every egress
    (switch or server end) by interface; ``gate_of``: a switch interface, as an
    ingress, -> the gate at the other end of its link; ``ports_of``: a switch's
    interfaces (the structural feeders when the datapath flows know none)."""

    limits: dict[str, Thresholds]
    gates: dict[str, Gate]
    gate_of: dict[str, str]
    switch_of: dict[str, str]
    ports_of: dict[str, list[str]]

    def structural_feeders(self, queue: str) -> set[str]:
        """Every gate that could feed ``queue``: those of its switch's other ports."""
        switch = self.switch_of[queue]
        return {self.gate_of[intf] for intf in self.ports_of[switch] if intf != queue}


def plan_layout(topology: Topology, plan: Plan) -> Layout:
    """The PFC layout of a planned fabric (thresholds from its buffer, MTU and rates)."""
    spec = topology.spec
    frame = spec.mtu + 100
    # name -> (node, interface, namespace, rate, on a switch); a server's interfaces
    # (eth0, ...) repeat across servers, so its gates are named "server:interface".
    ends: dict[str, tuple[str, str, str | None, float, bool]] = {}
    pairs: list[tuple[str, str]] = []
    for link in topology.links:
        named = []
        for end in link.ends():
            if end.node in plan.netns:
                name = f"{end.node}:{end.intf}"
                ends[name] = (end.node, end.intf, plan.netns[end.node], link.mbps, False)
            else:
                intf, netns = plan.intf_netns(end.node, end.port)
                name = intf
                ends[name] = (end.node, intf, netns, link.mbps, True)
            named.append(name)
        pairs.append((named[0], named[1]))
    ports_of: dict[str, list[str]] = {}
    for name, (node, _, _, _, on_switch) in ends.items():
        if on_switch:
            ports_of.setdefault(node, []).append(name)
    limits = {}
    for switch, names in ports_of.items():
        fastest = max(ends[n][3] for n in names)
        for name in names:
            limits[name] = thresholds(spec.buffer_bytes, frame, len(names) - 1, fastest)
    gates = {name: Gate(intf, netns, mbps, frame,
                        limits[name].limit if on_switch else spec.buffer_bytes)
             for name, (_, intf, netns, mbps, on_switch) in ends.items()}
    gate_of = {}
    for a, b in pairs:
        if ends[a][4]:
            gate_of[a] = b
        if ends[b][4]:
            gate_of[b] = a
    switch_of = {name: node for name, (node, _, _, _, on_switch) in ends.items() if on_switch}
    return Layout(limits, gates, gate_of, switch_of, ports_of)
