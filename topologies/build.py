"""Wire a FabricSpec into a Topology: rail-optimized 2-tier or 3-tier Clos."""

from __future__ import annotations

from collections import defaultdict

from topologies.model import (LEAF, SERVER, SPINE, TOR, Endpoint, Link, Nic, Node,
                              Topology, switch_dpid)
from topologies.spec import IFNAME_MAX, RUN_PREFIX_CHARS, FabricSpec, TopologyError

#: Longest switch-side interface name before the fabric's run prefix.
SWITCH_IFNAME_MAX = IFNAME_MAX - RUN_PREFIX_CHARS


def tor_name(pod: int, rail: int) -> str:
    """Name of the rail-``rail`` ToR of pod ``pod``."""
    return f"t{pod}r{rail}"


def nic_ip(rail: int, pod: int, index_in_pod: int) -> str:
    """IPv4 address of NIC ``rail`` of server ``index_in_pod`` of pod ``pod``."""
    return f"10.{rail}.{pod}.{index_in_pod + 1}"


def nic_mac(rail: int, pod: int, index_in_pod: int) -> str:
    """Locally administered MAC of a NIC, unique in the fabric."""
    return (f"02:00:{rail:02x}:{pod:02x}:"
            f"{(index_in_pod >> 8) & 0xff:02x}:{index_in_pod & 0xff:02x}")


class _Wiring:
    """Allocates switch ports in order and records links."""

    def __init__(self, spec: FabricSpec) -> None:
        self.spec = spec
        self.next_port: dict[str, int] = defaultdict(lambda: 1)
        self.links: list[Link] = []

    def port(self, switch: str) -> Endpoint:
        number = self.next_port[switch]
        self.next_port[switch] = number + 1
        intf = f"{switch}p{number}"
        if len(intf) > SWITCH_IFNAME_MAX:
            raise TopologyError(
                f"{self.spec.name}: interface name {intf!r} is longer than "
                f"{SWITCH_IFNAME_MAX} characters (fabric too large: fewer pods, spines or links)")
        return Endpoint(switch, number, intf)

    def connect(self, lower: Endpoint, upper_switch: str, tier: str, mbps: float) -> None:
        self.links.append(Link(lower, self.port(upper_switch), tier, mbps,
                               self.spec.buffer_bytes))


def build(spec: FabricSpec) -> Topology:
    """The wired fabric for ``spec``: servers, rail ToRs, optional leaves, spines."""
    wiring = _Wiring(spec)
    nodes: list[Node] = []
    nics: list[Nic] = []
    number = 0
    for pod in range(spec.pods):
        for index in range(spec.servers_per_pod):
            number += 1
            nodes.append(Node(f"h{number}", SERVER, pod=pod, index=index))
    for pod in range(spec.pods):
        for rail in range(spec.rails):
            block = pod // spec.pods_per_block if spec.tiers == 3 else None
            nodes.append(Node(tor_name(pod, rail), TOR, pod=pod, rail=rail, block=block,
                              dpid=switch_dpid(TOR, pod, rail)))
    leaves = [Node(f"l{block}n{i}", LEAF, block=block, index=i, dpid=switch_dpid(LEAF, block, i))
              for block in range(spec.blocks) for i in range(spec.leaves_per_block)]
    spines = [Node(f"s{i}", SPINE, index=i, dpid=switch_dpid(SPINE, 0, i))
              for i in range(spec.spines)]
    nodes += leaves + spines

    for server in [n for n in nodes if n.kind == SERVER]:
        for rail in range(spec.rails):
            tor = tor_name(server.pod, rail)
            nic_end = Endpoint(server.name, rail, f"eth{rail}")
            wiring.connect(nic_end, tor, "host", spec.nic_mbps)
            nics.append(Nic(server.name, rail, nic_end.intf,
                            nic_ip(rail, server.pod, server.index),
                            nic_mac(rail, server.pod, server.index),
                            tor, wiring.links[-1].b.port))
    tors = [n for n in nodes if n.kind == TOR]
    if spec.tiers == 2:
        for tor in tors:
            for spine in spines:
                for _ in range(spec.tor_uplink_links):
                    wiring.connect(wiring.port(tor.name), spine.name, "tor-spine", spec.fabric_mbps)
    else:
        for tor in tors:
            for leaf in [n for n in leaves if n.block == tor.block]:
                for _ in range(spec.tor_uplink_links):
                    wiring.connect(wiring.port(tor.name), leaf.name, "tor-leaf", spec.fabric_mbps)
        plane_size = spec.spines // spec.leaves_per_block
        for leaf in leaves:
            plane = spines[leaf.index * plane_size:(leaf.index + 1) * plane_size]
            for spine in plane:
                for _ in range(spec.leaf_uplink_links):
                    wiring.connect(wiring.port(leaf.name), spine.name, "leaf-spine",
                                   spec.fabric_mbps)
    return Topology(spec, tuple(nodes), tuple(nics), tuple(wiring.links))
