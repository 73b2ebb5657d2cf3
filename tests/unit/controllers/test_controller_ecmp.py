"""ECMP end to end on a fake fabric running the real OpenFlow rules: every NIC reaches every
NIC, minimally, spread over spines by the switches' multipath hash and hash-table slots."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.controllers.fakeoftable import FakeFabric, FakeOFError, TraceError, programmed

from controllers.algorithms.ecmp import EcmpAlgorithm  # noqa: E402
from controllers.core.intents import ClearSwitch, FlowRule, Group, Output, ToGroup  # noqa: E402
from controllers.core.routing import TIER  # noqa: E402
from topologies import load  # noqa: E402
from topologies.model import SPINE, TOR  # noqa: E402

PRESETS = ["rail-2tier-small", "rail-3tier", "fat-tree-k4"]


def switch_graph(topology):
    """Switches and fabric links as an undirected graph (the test's own oracle)."""
    graph = nx.Graph()
    graph.add_nodes_from(n.name for n in topology.switches())
    graph.add_edges_from((l.a.node, l.b.node) for l in topology.links if l.tier != "host")
    return graph


def assert_valley_free(topology, hops):
    tiers = [TIER[topology.node(hop.switch).kind] for hop in hops]
    peak = tiers.index(max(tiers))
    assert tiers[:peak + 1] == sorted(tiers[:peak + 1]), f"not climbing: {hops}"
    assert tiers[peak:] == sorted(tiers[peak:], reverse=True), f"valley: {hops}"


@pytest.fixture(scope="module", params=PRESETS)
def setup(request):
    topology = load(request.param)
    algorithm, fabric = programmed(topology)
    return topology, algorithm, fabric


def test_every_nic_reaches_every_nic_minimally(setup):
    topology, _, fabric = setup
    lengths = dict(nx.all_pairs_shortest_path_length(switch_graph(topology)))
    for src in topology.nics:
        for dst in topology.nics:
            if src == dst:
                continue
            hops, reached = fabric.trace(src, dst.ip, udp_src=1000 + dst.rail)
            assert reached == (dst.server, dst.rail), f"{src.ip} -> {dst.ip} reached {reached}"
            assert len(hops) == lengths[src.tor][dst.tor] + 1
            assert len({hop.switch for hop in hops}) == len(hops)
            assert_valley_free(topology, hops)


def far_pair(topology):
    """A source NIC and a destination NIC whose path must cross the spines."""
    src = topology.nics[0]
    src_node = topology.node(src.server)
    for dst in topology.nics:
        dst_node = topology.node(dst.server)
        if topology.spec.tiers == 2 and dst_node.pod != src_node.pod:
            return src, dst
        if (topology.spec.tiers == 3 and dst_node.pod // topology.spec.pods_per_block
                != src_node.pod // topology.spec.pods_per_block):
            return src, dst
    raise AssertionError("no far pair")


def test_flows_spread_over_all_spines_and_parallel_links(setup):
    topology, _, fabric = setup
    src, dst = far_pair(topology)
    spines, first_ports = set(), set()
    for udp_src in range(49152, 49152 + 256):
        hops, reached = fabric.trace(src, dst.ip, udp_src=udp_src)
        assert reached == (dst.server, dst.rail)
        spines |= {hop.switch for hop in hops if topology.node(hop.switch).kind == SPINE}
        first_ports.add(hops[0].out_port)
    assert spines == {n.name for n in topology.switches(SPINE)}
    uplinks = {l.a.port for l in topology.links if l.a.node == src.tor and l.tier != "host"}
    assert first_ports == uplinks


def up_ports(topology, switch):
    """Ports of ``switch`` on links toward a higher tier."""
    ports = set()
    for link in topology.links:
        for near, far in ((link.a, link.b), (link.b, link.a)):
            peer = topology.node(far.node)
            if (near.node == switch and peer.is_switch
                    and TIER[peer.kind] > TIER[topology.node(switch).kind]):
                ports.add(near.port)
    return ports


def test_successive_tiers_hash_independently_rail_3tier():
    """ToR and leaf choose uplinks independently: every (ToR uplink, leaf uplink) pair is used.

    With one hash basis on every switch the leaf would repeat the ToR's slot
    (polarization) and most pairs would never be seen.
    """
    topology, fabric = RAIL_3TIER
    src, dst = far_pair(topology)
    seen = set()
    for udp_src in range(49152, 49152 + 512):
        hops, _ = fabric.trace(src, dst.ip, udp_src=udp_src)
        seen.add((hops[0].out_port, hops[1].switch, hops[1].out_port))
    leaf_of = {port: leaf for port, leaf, _ in seen}
    assert set(leaf_of) == up_ports(topology, src.tor)
    expected = {(port, leaf, up) for port, leaf in leaf_of.items()
                for up in up_ports(topology, leaf)}
    assert len(expected) >= 16 and seen == expected


def test_same_flow_always_takes_the_same_path(setup):
    topology, _, fabric = setup
    src, dst = far_pair(topology)
    assert fabric.trace(src, dst.ip, udp_src=50000) == fabric.trace(src, dst.ip, udp_src=50000)


def test_table_miss_drops_unknown_and_non_ip(setup):
    topology, _, fabric = setup
    src = topology.nics[0]
    for switch in fabric.switches.values():
        miss = switch.lookup({"eth_type": 0x86DD, "in_port": 1})
        assert miss is not None and miss.priority == 0 and not miss.match and not miss.actions
    with pytest.raises(TraceError, match="dropped"):
        fabric.trace(src, "192.168.7.7")
    with pytest.raises(TraceError, match="dropped"):
        fabric.trace(src, "10.0.0.1", eth_type=0x86DD)
    # An unused address in a remote ToR's /24 dies at that ToR instead of bouncing back.
    dst = far_pair(topology)[1]
    unused = dst.ip.rsplit(".", 1)[0] + ".250"
    with pytest.raises(TraceError, match=f"dropped at {dst.tor}"):
        fabric.trace(src, unused)


def test_arp_punted_on_tors_dropped_elsewhere(setup):
    topology, _, fabric = setup
    for node in topology.switches():
        outs = fabric.by_name(node.name).outputs({"eth_type": 0x0806, "in_port": 1, "arp_op": 1})
        assert outs == (["controller"] if node.kind == TOR else [])


def test_switch_up_clears_then_groups_before_flows(setup):
    topology, algorithm, _ = setup
    for node in topology.switches():
        intents = algorithm.switch_up(node.dpid, now=1.0)
        assert intents[0] == ClearSwitch(node.dpid)
        assert all(getattr(i, "dpid", None) == node.dpid for i in intents)
        group_at = {i.group_id: n for n, i in enumerate(intents) if isinstance(i, Group)}
        for n, intent in enumerate(intents):
            if isinstance(intent, FlowRule):
                for action in intent.actions:
                    if isinstance(action, ToGroup):
                        assert group_at[action.group_id] < n
        for group in (i for i in intents if isinstance(i, Group)):
            assert group.type == "select" and len(group.buckets) > 1
            assert len({b.weight for b in group.buckets}) == 1
            assert len({b.port for b in group.buckets}) == len(group.buckets)


def test_prefixes_with_the_same_next_hops_share_one_select_group(setup):
    topology, algorithm, _ = setup
    for node in topology.switches():
        intents = algorithm.switch_up(node.dpid, now=1.0)
        groups = {i.group_id: i.buckets for i in intents if isinstance(i, Group)}
        assert len(set(groups.values())) == len(groups)  # one group per distinct bucket set
        users = [a.group_id for i in intents if isinstance(i, FlowRule)
                 for a in i.actions if isinstance(a, ToGroup)]
        assert set(users) == set(groups)
        if node.kind == TOR and groups:  # every remote prefix over the same uplinks
            assert len(groups) == 1 and len(users) == len(topology.switches(TOR)) - 1


def test_program_is_deterministic(setup):
    topology, _, _ = setup
    first, second = EcmpAlgorithm(topology), EcmpAlgorithm(topology)
    for node in topology.switches():
        assert first.switch_up(node.dpid, 0.0) == second.switch_up(node.dpid, 5.0)


def test_unknown_dpid_gets_nothing():
    assert EcmpAlgorithm(load("rail-2tier-small")).switch_up(0xDEAD, 0.0) == []


@settings(max_examples=60, deadline=None)
@given(src_index=st.integers(0, 31), dst_index=st.integers(0, 31), udp_src=st.integers(1, 65535))
def test_any_flow_is_delivered_rail_3tier(src_index, dst_index, udp_src):
    topology, fabric = RAIL_3TIER
    src, dst = topology.nics[src_index], topology.nics[dst_index]
    if src != dst:
        assert fabric.trace(src, dst.ip, udp_src=udp_src)[1] == (dst.server, dst.rail)


RAIL_3TIER = (load("rail-3tier"), programmed(load("rail-3tier"))[1])


def test_fake_rejects_flow_to_missing_group_and_detects_loops():
    topology = load("rail-2tier-small")
    fabric = FakeFabric(topology)
    tor, spine = topology.node("t0r0"), topology.node("s0")
    with pytest.raises(FakeOFError, match="missing group"):
        fabric.apply([FlowRule(tor.dpid, 10, {}, (ToGroup(7),))])
    up = next(l for l in topology.links if l.a.node == "t0r0" and l.b.node == "s0")
    fabric.apply([FlowRule(tor.dpid, 10, {"eth_type": 0x0800}, (Output(up.a.port),)),
                  FlowRule(spine.dpid, 10, {"eth_type": 0x0800}, (Output(up.b.port),))])
    with pytest.raises(TraceError, match="back out of in port"):
        fabric.trace(topology.nics[0], "10.0.1.1")


def snapshot(fabric):
    return {dpid: (dict(s.flows), dict(s.groups)) for dpid, s in fabric.switches.items()}


@pytest.mark.parametrize("name,lower,upper", [("rail-2tier-small", "t0r0", "s1"),
                                              ("rail-3tier", "l0n1", "s3"),
                                              ("fat-tree-k4", "t0r0", "l0n0")])
def test_link_failure_reroutes_then_recovery_restores(name, lower, upper):
    topology = load(name)
    algorithm, fabric = programmed(topology)
    before = snapshot(fabric)
    link = next(l for l in topology.links if l.a.node == lower and l.b.node == upper)
    changes = algorithm.link_change(link, up=False, now=1.0)
    assert changes and not any(isinstance(i, ClearSwitch) for i in changes)
    fabric.apply(changes)
    assert algorithm.link_change(link, up=False, now=2.0) == []
    dead = {(link.a.node, link.a.port), (link.b.node, link.b.port)}
    for src in topology.nics[::3]:
        for dst in topology.nics[::5]:
            if src == dst:
                continue
            for udp_src in range(40000, 40016):
                hops, reached = fabric.trace(src, dst.ip, udp_src=udp_src)
                assert reached == (dst.server, dst.rail)
                assert not {(h.switch, h.out_port) for h in hops} & dead, hops
    fabric.apply(algorithm.link_change(link, up=True, now=3.0))
    assert snapshot(fabric) == before


def test_host_link_change_is_ignored():
    topology = load("rail-2tier-small")
    algorithm = EcmpAlgorithm(topology)
    host_link = next(l for l in topology.links if l.tier == "host")
    assert algorithm.link_change(host_link, up=False, now=0.0) == []
