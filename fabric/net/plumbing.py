"""Batched plumbing of a topology: namespaces, veth pairs, addresses, offloads.

PLATFORM.md measured why: stock Mininet spends ~75 s on a 64 x 8 fabric one
command at a time; one `ip -batch` for every veth pair (each end created
straight in its server's or OVS shard's namespace) and one per namespace
build the same plumbing in about a second. Nothing of a run is left in the
root namespace.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fabric.net import names
from fabric.nic import wire
from fabric.net.netns import disable_tx_checksum, write_sysctls
from fabric.net.sh import batch
from topologies import Topology

#: Sysctls of every server namespace: no IPv6 chatter on the fabric, and
#: loose reverse-path checks (cross-rail replies arrive on another NIC).
SERVER_SYSCTLS = {
    "ipv6/conf/all/disable_ipv6": "1",
    "ipv6/conf/default/disable_ipv6": "1",
    "ipv4/conf/all/rp_filter": "0",
    "ipv4/conf/default/rp_filter": "0",
}


@dataclass(frozen=True)
class Plan:
    """Every name a topology's plumbing uses under one run prefix."""

    prefix: str
    netns: dict[str, str]               # server -> namespace
    bridges: dict[str, str]             # switch -> bridge
    switch_intfs: dict[tuple[str, int], str]   # (switch, port) -> interface (in its shard)
    switch_netns: dict[str, str]        # switch -> namespace of its OVS shard

    def intf_netns(self, switch: str, port: int) -> tuple[str, str]:
        """(interface, namespace) of one switch port."""
        return self.switch_intfs[(switch, port)], self.switch_netns[switch]

    def shard_intfs(self) -> dict[str, list[str]]:
        """Switch-side interfaces by shard namespace."""
        found: dict[str, list[str]] = {ns: [] for ns in sorted(set(self.switch_netns.values()))}
        for (switch, _), intf in sorted(self.switch_intfs.items()):
            found[self.switch_netns[switch]].append(intf)
        return found


def plan(topology: Topology, prefix: str, switch_netns: dict[str, str]) -> Plan:
    """Derive all names of a run from the topology, its prefix and its shards."""
    netns = {s.name: names.netns_name(prefix, s.name) for s in topology.servers()}
    bridges = {s.name: names.bridge_name(prefix, s.name) for s in topology.switches()}
    if set(switch_netns) != set(bridges):
        raise ValueError("plan: every switch needs exactly one shard namespace")
    intfs = {}
    for link in topology.links:
        for end in link.ends():
            if end.node in bridges:
                intfs[(end.node, end.port)] = names.switch_intf(prefix, end.intf)
    return Plan(prefix, netns, bridges, intfs, dict(switch_netns))


def create_namespaces(plan_: Plan) -> None:
    """`ip netns add` for every server, then its sysctls and loopback."""
    batch("ip", [f"netns add {ns}" for ns in plan_.netns.values()])
    for ns in plan_.netns.values():
        write_sysctls(SERVER_SYSCTLS, ns)


def create_links(topology: Topology, plan_: Plan) -> None:
    """All veth pairs in one batch, each end created in its namespace (server or shard)."""
    mtu = topology.spec.mtu
    group = names.link_group(plan_.prefix)
    lines = []
    for link in topology.links:
        a, b = link.a, link.b
        upper, upper_ns = plan_.intf_netns(b.node, b.port)
        if a.node in plan_.netns:
            lower, lower_ns = a.intf, plan_.netns[a.node]
        else:
            lower, lower_ns = plan_.intf_netns(a.node, a.port)
        lines.append(f"link add {upper} mtu {mtu} group {group} netns {upper_ns} type veth "
                     f"peer name {lower} mtu {mtu} group {group} netns {lower_ns}")
    batch("ip", lines)

    def one(item: tuple[str, list[str]]) -> None:
        ns, intfs = item
        disable_tx_checksum(intfs, ns)
        batch("ip", [f"link set {intf} up" for intf in intfs], netns=ns)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, plan_.shard_intfs().items()))


def configure_servers(topology: Topology, plan_: Plan, static_neighbors: bool = True) -> None:
    """Per namespace: offloads off, NIC addresses (rail r = 10.r.0.0/16), links up.

    With ``static_neighbors`` every NIC of every other server gets a permanent
    neighbour entry on the same-rail NIC (RDMA NICs resolve peers out of band).
    Without, ARP goes to the controller; note the kernel's neighbour table is
    shared by all namespaces and overflows at gc_thresh3 (1024) dynamic
    entries, which a 16 x 8 fabric already exceeds with all-pairs traffic.
    """
    def one(server: str) -> None:
        ns = plan_.netns[server]
        nics = topology.nics_of(server)
        disable_tx_checksum([nic.intf for nic in nics], ns)
        lines = ["link set lo up"]
        for nic in nics:
            lines += [f"link set {nic.intf} address {nic.mac}",
                      f"addr add {nic.ip}/16 dev {nic.intf}",
                      f"link set {nic.intf} up",
                      # Source routing per NIC: traffic from rail r's address leaves on
                      # rail r's NIC, whatever rail the destination is on.
                      f"rule add from {nic.ip}/32 table {100 + nic.rail}",
                      f"route add 10.0.0.0/8 dev {nic.intf} src {nic.ip} table {100 + nic.rail}",
                      # The virtual fabric manager (in-band control) sits behind every NIC's ToR.
                      f"neigh replace {wire.MANAGER_IP} lladdr {wire.MANAGER_MAC} dev {nic.intf} "
                      "nud permanent"]
        if static_neighbors:
            lines += [f"neigh replace {peer.ip} lladdr {peer.mac} dev eth{peer.rail} nud permanent"
                      for peer in topology.nics if peer.server != server]
        batch("ip", lines, netns=ns)

    # setns is per thread, so namespaces can be configured in parallel.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, plan_.netns))
