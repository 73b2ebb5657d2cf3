"""Equal-cost paths between NICs as lists of directed links (pure).

A directed link is named by its transmitting end, ``(node, port)``: a NIC's
uplink is ``(server, rail)``, a switch egress is ``(switch, port)``. A path
from NIC to NIC is the NIC's uplink, every switch egress on the way, and the
destination ToR's host port. `PathFinder` enumerates the valley-free
equal-cost paths the routes (`controllers.core.routing.compute_routes`) allow,
caching them per (source ToR, destination ToR).
"""

from __future__ import annotations

from typing import Iterable

from controllers.core.routing import FabricMap, Routes, tor_prefix
from topologies.model import Link, Nic, Topology

#: A directed link: the transmitting end (node name, port number).
LinkKey = tuple[str, int]
#: Switch egresses between the source and destination ToR (both included as transmitters).
Hops = tuple[LinkKey, ...]


def link_keys(link: Link) -> tuple[LinkKey, LinkKey]:
    """Both directions of a link."""
    return (link.a.node, link.a.port), (link.b.node, link.b.port)


def capacities(topology: Topology) -> dict[LinkKey, float]:
    """Capacity in Mb/s of every directed link of the topology."""
    out: dict[LinkKey, float] = {}
    for link in topology.links:
        for key in link_keys(link):
            out[key] = link.mbps
    return out


class PathFinder:
    """Candidate paths between NICs under the current routes."""

    def __init__(self, topology: Topology, routes: Routes) -> None:
        self.topology = topology
        self.fabric = FabricMap(topology)
        self.tors = {tor.name: tor for tor in topology.switches("tor")}
        self.nic_by_ip: dict[str, Nic] = {nic.ip: nic for nic in topology.nics}
        self.routes = routes
        self._cache: dict[tuple[str, str], tuple[Hops, ...]] = {}

    def set_routes(self, routes: Routes) -> None:
        """New routes (a link changed): forget cached paths."""
        self.routes = routes
        self._cache.clear()

    def switch_paths(self, src_tor: str, dst_tor: str) -> tuple[Hops, ...]:
        """Every equal-cost list of switch egresses from ``src_tor`` up to (not into) ``dst_tor``."""
        key = (src_tor, dst_tor)
        if key not in self._cache:
            self._cache[key] = tuple(self._walk(src_tor, tor_prefix(self.tors[dst_tor]), dst_tor))
        return self._cache[key]

    def _walk(self, switch: str, prefix: str, dst_tor: str) -> Iterable[Hops]:
        if switch == dst_tor:
            yield ()
            return
        for port in self.routes[switch].get(prefix, ()):
            peer = self.fabric.peer(switch, port)
            if peer is None:
                continue
            for rest in self._walk(peer.peer.node, prefix, dst_tor):
                yield ((switch, port),) + rest

    def paths(self, src_ip: str, dst_ip: str) -> list[tuple[LinkKey, ...]]:
        """Every candidate NIC-to-NIC path as directed links (empty list: unreachable)."""
        src, dst = self.nic_by_ip[src_ip], self.nic_by_ip[dst_ip]
        first, last = (src.server, src.rail), (dst.tor, dst.tor_port)
        return [(first, *hops, last) for hops in self.switch_paths(src.tor, dst.tor)]

    def nic(self, ip: str) -> Nic | None:
        """The NIC with address ``ip``."""
        return self.nic_by_ip.get(ip)
