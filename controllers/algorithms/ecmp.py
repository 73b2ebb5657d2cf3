"""ECMP, the baseline: proactive valley-free routes with OpenFlow select groups.

Program of every switch (sent on ``switch_up`` after clearing it):
- priority 0: table miss -> drop (a Clos has loops: never flood);
- priority 100: ARP -> controller on ToRs (answered by ``packet_in``), drop elsewhere;
- priority 232: on ToRs, ``ipv4_dst`` /32 of each local NIC -> its downlink port;
- priority 224: ``ipv4_dst`` /24 of every other ToR -> one output port, or a
  select group (one equal-weight bucket per equal-cost port) when there are
  several. The switch hashes each flow onto one bucket, so distinct flows
  spread over the spines and a few big flows can collide, as in real fabrics.
Prefixes over the same ports share one group (its id made per switch on first use,
never reused), so a ToR of a two-tier fabric holds one group for every remote
prefix; a link change points the affected prefixes at the group of their new
ports and removes groups nothing uses any more.
"""

from __future__ import annotations

import logging
from typing import Iterable

from controllers.core.arp import ARP_REQUEST, ETH_TYPE_ARP, ETH_TYPE_IPV4, arp_reply, parse_arp
from controllers.algorithms.base import BaseAlgorithm
from controllers.core.intents import (Bucket, ClearSwitch, FlowRule, Group, Intent, Output, PacketOut,
                                 ToController, ToGroup)
from controllers.core.routing import FabricMap, Routes, compute_routes, prefix_match
from topologies.model import TOR, Link, Node, Topology

LOG = logging.getLogger(__name__)

PRIORITY_MISS = 0
PRIORITY_ARP = 100
PRIORITY_ROUTE = 200  # + prefix length, so longer prefixes win


class EcmpAlgorithm(BaseAlgorithm):
    """Equal-cost multipath over select groups; ignores load."""

    name = "ecmp"
    #: ECMP ignores load, so the shim does not poll port counters for it.
    uses_port_stats = False

    def __init__(self, topology: Topology, seed: int = 0) -> None:
        super().__init__(topology)
        self.seed = seed  # the switches' hash basis is set per switch in controllers.openflow.ofmsgs
        self.fabric = FabricMap(topology)
        self.down_links: set[Link] = set()
        self.healthy: Routes = compute_routes(topology)
        self.routes: Routes = self.healthy
        #: Per switch: bucket ports -> select group id. Prefixes whose next hops are the
        #: same ports share one group (and so one hash table: a 64 x 8 ToR in 8 pods has
        #: 63 remote prefixes over the same 8 uplinks); the hash covers the 5-tuple, so a
        #: flow takes the same bucket either way. Ids are never reused.
        self.group_ids: dict[int, dict[tuple[int, ...], int]] = {}
        self.installed: dict[int, list[Intent]] = {}

    def switch_up(self, dpid: int, now: float) -> list[Intent]:
        """Clear the switch, then its groups, then its flows."""
        node = self.fabric.switch(dpid)
        if node is None:
            LOG.warning("ecmp: dpid %#x is not in topology %s; not programming it",
                        dpid, self.topology.name)
            return []
        program = self.program(node)
        self.installed[dpid] = program
        return [ClearSwitch(dpid), *program]

    def switch_down(self, dpid: int, now: float) -> list[Intent]:
        """Forget what a disconnected switch had installed."""
        self.installed.pop(dpid, None)
        return []

    def program(self, node: Node) -> list[Intent]:
        """Every group (first) and flow of one switch under the current routes."""
        dpid = node.dpid
        groups: list[Intent] = []
        made: set[int] = set()
        flows: list[Intent] = [FlowRule(dpid, PRIORITY_MISS)]
        arp_actions = (ToController(),) if node.kind == TOR else ()
        flows.append(FlowRule(dpid, PRIORITY_ARP, {"eth_type": ETH_TYPE_ARP}, arp_actions))
        if node.kind == TOR:
            for port, ip in sorted(self.fabric.host_ports(node.name).items()):
                flows.append(FlowRule(dpid, PRIORITY_ROUTE + 32,
                                      {"eth_type": ETH_TYPE_IPV4, "ipv4_dst": ip}, (Output(port),)))
        for prefix, ports in sorted(self.routes[node.name].items()):
            match = {"eth_type": ETH_TYPE_IPV4, "ipv4_dst": prefix_match(prefix)}
            if len(self.healthy[node.name][prefix]) > 1:
                group_id = self._group_id(dpid, ports)
                if group_id not in made:
                    made.add(group_id)
                    groups.append(Group(dpid, group_id, "select",
                                        tuple(Bucket(p) for p in ports)))
                actions: tuple = (ToGroup(group_id),)
            else:
                actions = tuple(Output(p) for p in ports[:1])
            flows.append(FlowRule(dpid, PRIORITY_ROUTE + 24, match, actions))
        return groups + flows

    def _group_id(self, dpid: int, ports: Iterable[int]) -> int:
        """The select group of this switch over exactly ``ports`` (made on first use)."""
        ids = self.group_ids.setdefault(dpid, {})
        return ids.setdefault(tuple(ports), len(ids) + 1)

    def link_change(self, link: Link, up: bool, now: float) -> list[Intent]:
        """Recompute routes without failed links; modify only what changed on connected switches."""
        if link.tier == "host":
            return []
        before = set(self.down_links)
        (self.down_links.discard if up else self.down_links.add)(link)
        if self.down_links == before:
            return []
        LOG.info("ecmp: link %s:%d-%s:%d %s; %d link(s) down", link.a.node, link.a.port,
                 link.b.node, link.b.port, "up" if up else "down", len(self.down_links))
        self.routes = compute_routes(self.topology, frozenset(self.down_links))
        intents: list[Intent] = []
        for dpid in sorted(self.installed):
            new = self.program(self.fabric.switch_by_dpid[dpid])
            intents += _diff(self.installed[dpid], new)
            self.installed[dpid] = new
        return intents

    def packet_in(self, dpid: int, in_port: int, data: bytes, now: float) -> list[Intent]:
        """Answer an ARP request for a fabric NIC out of the port it came in; ignore the rest."""
        node = self.fabric.switch(dpid)
        if node is None or node.kind != TOR:
            return []
        if in_port not in self.fabric.host_ports(node.name):
            return []
        request = parse_arp(data)
        if request is None or request.op != ARP_REQUEST:
            return []
        nic = self.fabric.nic_by_ip.get(request.target_ip)
        if nic is None:
            LOG.debug("ecmp: ARP for unknown %s on %s port %d", request.target_ip, node.name, in_port)
            return []
        return [PacketOut(dpid, in_port, arp_reply(request, nic.mac))]


def _diff(old: Iterable[Intent], new: Iterable[Intent]) -> list[Intent]:
    """Intents turning program ``old`` into ``new``: groups modified first, then flows."""
    old_groups = {i.group_id: i for i in old if isinstance(i, Group)}
    new_groups = {i.group_id: i for i in new if isinstance(i, Group)}
    old_flows = {i.key(): i for i in old if isinstance(i, FlowRule)}
    new_flows = {i.key(): i for i in new if isinstance(i, FlowRule)}
    out: list[Intent] = []
    for group_id, group in new_groups.items():
        if group_id not in old_groups:
            out.append(group)
        elif old_groups[group_id] != group:
            out.append(Group(group.dpid, group_id, group.type, group.buckets, "modify"))
    for key, flow in new_flows.items():
        if old_flows.get(key) != flow:
            out.append(flow)
    for key, flow in old_flows.items():
        if key not in new_flows:
            out.append(FlowRule(flow.dpid, flow.priority, flow.match, (), flow.table, "delete"))
    for group_id, group in old_groups.items():
        if group_id not in new_groups:
            out.append(Group(group.dpid, group_id, group.type, (), "delete"))
    return out
