"""What each switch egress queue of a live fabric is: node, port, peer, tier, capacity."""

from __future__ import annotations

from dataclasses import dataclass

from fabric.net.network import Network


@dataclass(frozen=True)
class PortInfo:
    """One egress queue: the switch (or server) it belongs to and the link it feeds."""

    dev: str
    netns: str | None
    node: str
    port: int
    peer: str
    tier: str
    capacity_mbps: float
    on_switch: bool


def port_infos(net: Network) -> list[PortInfo]:
    """Every shaped egress queue of the fabric, switch ports first."""
    switch_ports, host_ports = [], []
    for link in net.topology.links:
        for local, remote in ((link.a, link.b), (link.b, link.a)):
            if local.node in net.plan.netns:
                host_ports.append(PortInfo(local.intf, net.netns(local.node), local.node,
                                           local.port, remote.node, link.tier, link.mbps,
                                           on_switch=False))
            else:
                switch_ports.append(PortInfo(net.switch_intf(local.node, local.port),
                                             net.switch_netns(local.node), local.node,
                                             local.port, remote.node, link.tier, link.mbps,
                                             on_switch=True))
    return switch_ports + host_ports
