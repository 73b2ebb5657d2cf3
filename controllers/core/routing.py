"""Valley-free equal-cost routes of a Clos fabric, computed from a `topologies.Topology`.

Every ToR ``t{p}r{r}`` owns the prefix ``10.r.p.0/24`` (its hosts sit on its
downlink ports). For each destination ToR, a switch that can reach it by
going only down forwards down (to every neighbour one hop closer); any other
switch forwards up to every upper neighbour on a shortest path. This gives:
2-tier ToR -> all spine uplinks, spine -> the ToR's down ports; 3-tier ToR ->
its block's leaves, leaf -> down for its block's prefixes else up to its
plane's spines, spine -> the leaf ports of the destination block. Parallel
links are separate equal-cost ports. Routes never go down then up again
(valley-free), hence never loop. Everything is sorted, so the result is
deterministic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from math import inf

from topologies.model import LEAF, SPINE, TOR, Endpoint, Link, Node, Topology

#: Height of each switch kind; links run from lower to upper.
TIER = {TOR: 0, LEAF: 1, SPINE: 2}

#: switch name -> destination prefix -> equal-cost output ports (sorted; empty = unreachable).
Routes = dict[str, dict[str, tuple[int, ...]]]


def tor_prefix(tor: Node) -> str:
    """The /24 a ToR owns: ``10.{rail}.{pod}.0/24``."""
    return f"10.{tor.rail}.{tor.pod}.0/24"


def prefix_match(prefix: str) -> tuple[str, str]:
    """``(address, netmask)`` of a prefix, as an OpenFlow masked ``ipv4_dst`` wants it."""
    network = ipaddress.IPv4Network(prefix)
    return (str(network.network_address), str(network.netmask))


@dataclass(frozen=True)
class PortPeer:
    """What a switch port is wired to: the link and the far end."""

    link: Link
    peer: Endpoint


class FabricMap:
    """Lookups the controller needs: dpid <-> switch, (switch, port) -> link, host ports."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.switch_by_dpid: dict[int, Node] = {n.dpid: n for n in topology.switches()}
        self.ports: dict[tuple[str, int], PortPeer] = {}
        for link in topology.links:
            for local, remote in ((link.a, link.b), (link.b, link.a)):
                self.ports[(local.node, local.port)] = PortPeer(link, remote)
        self.nic_by_ip = {nic.ip: nic for nic in topology.nics}

    def switch(self, dpid: int) -> Node | None:
        """The switch with datapath id ``dpid`` (None if not in the fabric)."""
        return self.switch_by_dpid.get(dpid)

    def peer(self, switch: str, port: int) -> PortPeer | None:
        """The link and far end on port ``port`` of ``switch`` (None if unwired)."""
        return self.ports.get((switch, port))

    def host_ports(self, tor: str) -> dict[int, str]:
        """Host-facing ports of a ToR -> the IP of the NIC on that port."""
        return {nic.tor_port: nic.ip for nic in self.topology.nics if nic.tor == tor}


def fabric_links(topology: Topology) -> list[Link]:
    """Switch-to-switch links (every tier except ``host``)."""
    return [link for link in topology.links if link.tier != "host"]


def compute_routes(topology: Topology, down_links: frozenset[Link] = frozenset()) -> Routes:
    """Equal-cost, valley-free next-hop ports of every switch toward every ToR prefix.

    ``down_links`` are left out (failed links). A ToR has no entry for its own
    prefix (its hosts are reached by /32 host routes).
    """
    switches = sorted(topology.switches(), key=lambda n: (TIER[n.kind], n.dpid))
    ups: dict[str, list[tuple[int, str]]] = {n.name: [] for n in switches}
    downs: dict[str, list[tuple[int, str]]] = {n.name: [] for n in switches}
    for link in fabric_links(topology):
        if link in down_links:
            continue
        ups[link.a.node].append((link.a.port, link.b.node))
        downs[link.b.node].append((link.b.port, link.a.node))
    routes: Routes = {n.name: {} for n in switches}
    for dest in topology.switches(TOR):
        prefix = tor_prefix(dest)
        down_dist: dict[str, float] = {}
        for node in switches:
            if node.kind == TOR:
                down_dist[node.name] = 0 if node.name == dest.name else inf
            else:
                down_dist[node.name] = 1 + min((down_dist[p] for _, p in downs[node.name]),
                                               default=inf)
        dist: dict[str, float] = {}
        for node in reversed(switches):
            if down_dist[node.name] < inf:
                dist[node.name] = down_dist[node.name]
            else:
                dist[node.name] = 1 + min((dist[p] for _, p in ups[node.name]), default=inf)
        for node in switches:
            name = node.name
            if name == dest.name:
                continue
            if down_dist[name] < inf:
                ports = [port for port, p in downs[name] if down_dist[p] == down_dist[name] - 1]
            elif dist[name] < inf:
                ports = [port for port, p in ups[name] if dist[p] == dist[name] - 1]
            else:
                ports = []
            routes[name][prefix] = tuple(sorted(ports))
    return routes
