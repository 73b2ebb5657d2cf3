"""How many switches a packet crosses between two NICs on a shortest (equal-cost) path.

Swift scales its target delay with the hop count (fabric/nic/swift.py); real
NICs read it from the IP TTL. Here the fabric is known, so the harness tells
each message's NIC: a breadth-first search over the switch links gives the
switch distance between every pair of ToRs.
"""

from __future__ import annotations

from collections import deque

from topologies.model import Topology


class SwitchHops:
    """Switches on a shortest path between two NICs of ``topology``."""

    def __init__(self, topology: Topology) -> None:
        self.tor_of = {nic.ip: nic.tor for nic in topology.nics}
        self.neighbours: dict[str, set[str]] = {}
        for link in topology.links:
            a, b = link.a.node, link.b.node
            if topology.node(a).is_switch and topology.node(b).is_switch:
                self.neighbours.setdefault(a, set()).add(b)
                self.neighbours.setdefault(b, set()).add(a)
        self._distances: dict[str, dict[str, int]] = {}

    def _from(self, tor: str) -> dict[str, int]:
        if tor not in self._distances:
            distance, queue = {tor: 0}, deque([tor])
            while queue:
                switch = queue.popleft()
                for peer in self.neighbours.get(switch, ()):
                    if peer not in distance:
                        distance[peer] = distance[switch] + 1
                        queue.append(peer)
            self._distances[tor] = distance
        return self._distances[tor]

    def between(self, src_ip: str, dst_ip: str) -> int:
        """Switches a packet from NIC ``src_ip`` to NIC ``dst_ip`` crosses (1: one ToR);
        KeyError for an address that is no NIC, ValueError if they are not connected."""
        src, dst = self.tor_of[src_ip], self.tor_of[dst_ip]
        distance = self._from(src).get(dst)
        if distance is None:
            raise ValueError(f"no path between {src_ip} and {dst_ip}")
        return distance + 1
