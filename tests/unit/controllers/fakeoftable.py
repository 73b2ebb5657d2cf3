"""A fake OpenFlow fabric for unit tests (Faucet's fakeoftable idea, for intents).

Each `FakeSwitch` checks intents the way OVS would (strict about groups:
a flow may only point at a group that already exists) and keeps them for
inspection, and installs the OpenFlow messages `to_ofmsgs` makes of them in
an `OFPipeline`: forwarding, select groups included, is decided by the real
rules (the multipath hash actions and the HASH_TABLE slots), with masked
``ipv4_dst`` matching. `FakeFabric.trace` follows a packet from a NIC hop
by hop over the topology's links until it reaches a server NIC, is dropped,
is punted, or loops.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterable

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controllers.core.intents import ClearSwitch, FlowRule, Group, Intent, PacketOut, ToGroup
from controllers.core.routing import FabricMap
from controllers.openflow.ofmsgs import to_ofmsgs
from tests.unit.controllers.fakeofpipeline import OFPipeline
from topologies.model import Nic, Topology

MAX_HOPS = 16


class FakeOFError(AssertionError):
    """What a real switch would answer with an OFPErrorMsg."""


class TraceError(AssertionError):
    """A packet was dropped, punted, looped or left the fabric unexpectedly."""


def field_matches(name: str, wanted: Any, value: Any) -> bool:
    """One match field against a packet value (masked IPv4 and registers supported)."""
    if value is None:
        return False
    if name.startswith(("ipv4_", "arp_spa", "arp_tpa")):
        address = int(ipaddress.IPv4Address(value))
        if isinstance(wanted, tuple):
            base, mask = (int(ipaddress.IPv4Address(x)) for x in wanted)
            return address & mask == base & mask
        return address == int(ipaddress.IPv4Address(wanted))
    if isinstance(wanted, tuple):  # a masked register (the hash table's residues)
        base, mask = wanted
        return value & mask == base & mask
    return wanted == value


@functools.lru_cache(maxsize=None)
def openflow_messages(intent: Intent) -> tuple:
    """What the shim sends a switch for one intent (`to_ofmsgs`), cached: tests reprogram a lot."""
    datapath = SimpleNamespace(id=intent.dpid, ofproto=ofproto_v1_3,
                               ofproto_parser=ofproto_v1_3_parser)
    return tuple(to_ofmsgs(datapath, [intent]))


@dataclass
class FakeSwitch:
    """The intents (flows, groups, packet-outs) of one switch and its OpenFlow pipeline."""

    dpid: int
    flows: dict[tuple, FlowRule] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    packet_outs: list[PacketOut] = field(default_factory=list)
    pipeline: OFPipeline = field(default_factory=lambda: OFPipeline(field_matches))

    def apply(self, intent: Intent) -> None:
        """Apply one intent as a switch would, raising FakeOFError where OVS would answer an error."""
        self._check(intent)
        for message in openflow_messages(intent):
            self.pipeline.apply(message)

    def _check(self, intent: Intent) -> None:
        if isinstance(intent, ClearSwitch):
            self.flows.clear()
            self.groups.clear()
        elif isinstance(intent, Group):
            exists = intent.group_id in self.groups
            if intent.command == "add" and exists:
                raise FakeOFError(f"{self.dpid:#x}: group {intent.group_id} exists")
            if intent.command == "modify" and not exists:
                raise FakeOFError(f"{self.dpid:#x}: group {intent.group_id} unknown")
            if intent.command == "delete":
                self.groups.pop(intent.group_id, None)
            else:
                self.groups[intent.group_id] = dataclasses.replace(intent, command="add")
        elif isinstance(intent, FlowRule):
            if intent.command == "delete":
                self.flows.pop(intent.key(), None)
                return
            for action in intent.actions:
                if isinstance(action, ToGroup) and action.group_id not in self.groups:
                    raise FakeOFError(f"{self.dpid:#x}: flow {dict(intent.match)} points at "
                                      f"missing group {action.group_id}")
            self.flows[intent.key()] = intent
        elif isinstance(intent, PacketOut):
            self.packet_outs.append(intent)
        else:
            raise FakeOFError(f"{self.dpid:#x}: unsupported intent {intent!r}")

    def lookup(self, packet: dict[str, Any]) -> FlowRule | None:
        """The highest-priority matching flow; FakeOFError if two of equal priority match."""
        best: list[FlowRule] = []
        for flow in self.flows.values():
            if all(field_matches(k, v, packet.get(k)) for k, v in flow.match.items()):
                if not best or flow.priority > best[0].priority:
                    best = [flow]
                elif flow.priority == best[0].priority:
                    best.append(flow)
        if len(best) > 1:
            raise FakeOFError(f"{self.dpid:#x}: ambiguous match at priority {best[0].priority}")
        return best[0] if best else None

    def outputs(self, packet: dict[str, Any]) -> list[int | str]:
        """Ports (or ``"controller"``) the packet leaves by, per the OpenFlow pipeline; empty: dropped."""
        return self.pipeline.outputs(packet)


@dataclass(frozen=True)
class Hop:
    """One switch traversal: switch name, in port, out port."""

    switch: str
    in_port: int
    out_port: int


class FakeFabric:
    """Fake switches for every switch of a topology, wired by its links."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.map = FabricMap(topology)
        self.switches = {node.dpid: FakeSwitch(node.dpid) for node in topology.switches()}

    def apply(self, intents: Iterable[Intent]) -> None:
        """Apply intents in order, each to its switch."""
        for intent in intents:
            dpid = getattr(intent, "dpid", None)
            if dpid not in self.switches:
                raise FakeOFError(f"intent for unknown switch {dpid!r}: {intent!r}")
            self.switches[dpid].apply(intent)

    def by_name(self, name: str) -> FakeSwitch:
        """The fake switch called ``name``."""
        return self.switches[self.topology.node(name).dpid]

    def trace(self, src: Nic, dst_ip: str, udp_src: int = 49152, udp_dst: int = 4791,
              eth_type: int = 0x0800) -> tuple[list[Hop], tuple[str, int]]:
        """Follow a UDP packet from NIC ``src``; returns (hops, (server, rail) reached)."""
        switch, in_port = src.tor, src.tor_port
        hops: list[Hop] = []
        packet = {"eth_type": eth_type, "ipv4_src": src.ip, "ipv4_dst": dst_ip,
                  "ip_proto": 17, "udp_src": udp_src, "udp_dst": udp_dst}
        while len(hops) < MAX_HOPS:
            outs = self.by_name(switch).outputs({**packet, "in_port": in_port})
            if not outs:
                raise TraceError(f"dropped at {switch} (in port {in_port}) after {hops}")
            if len(outs) != 1 or outs[0] == "controller":
                raise TraceError(f"{switch}: expected one output port, got {outs}")
            out_port = int(outs[0])
            if out_port == in_port:
                raise TraceError(f"{switch}: sent back out of in port {in_port}")
            hops.append(Hop(switch, in_port, out_port))
            peer = self.map.peer(switch, out_port)
            if peer is None:
                raise TraceError(f"{switch}: output to unwired port {out_port}")
            if not self.topology.node(peer.peer.node).is_switch:
                return hops, (peer.peer.node, peer.peer.port)
            switch, in_port = peer.peer.node, peer.peer.port
        raise TraceError(f"loop: more than {MAX_HOPS} hops: {hops}")


def programmed(topology: Topology, algorithm: Any = None) -> tuple[Any, FakeFabric]:
    """An ECMP algorithm (or ``algorithm``) and a fake fabric with every switch brought up."""
    from controllers.algorithms.ecmp import EcmpAlgorithm
    algorithm = algorithm or EcmpAlgorithm(topology)
    fabric = FakeFabric(topology)
    for dpid in sorted(fabric.switches):
        fabric.apply(algorithm.switch_up(dpid, now=0.0))
    return algorithm, fabric
