"""adaptive / proactive on a fake fabric: announced flows get valid, loop-free paths;
adaptive avoids loaded and failed links; proactive never oversubscribes a link; a round
announced together is placed without a collision; grants reach the right NIC."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.controllers.fakeoftable import programmed

from controllers.algorithms.adaptive import AdaptiveAlgorithm  # noqa: E402
from controllers.core.events import PortCounters  # noqa: E402
from controllers.core.inband import control_frame, parse_control  # noqa: E402
from controllers.core.intents import FlowRule, PacketOut  # noqa: E402
from controllers.core.maxmin import link_loads  # noqa: E402
from controllers.algorithms.flow_routing import PRIORITY_FLOW, STALE_FLUSH_S  # noqa: E402
from controllers.core.routing import tor_prefix  # noqa: E402
from controllers.algorithms.proactive import ProactiveAlgorithm  # noqa: E402
from fabric.nic import wire  # noqa: E402
from topologies import load  # noqa: E402

ALGOS = [AdaptiveAlgorithm, ProactiveAlgorithm]


def nic(topology, server, rail):
    return next(n for n in topology.nics_of(server) if n.rail == rail)


def from_nic(message) -> bytes:
    """The frame a NIC sends to the fabric manager: control_frame's output, turned around."""
    frame = control_frame(wire.MANAGER_MAC, wire.MANAGER_IP, message)
    return frame[6:12] + frame[0:6] + frame[12:26] + frame[30:34] + frame[26:30] + frame[34:]


def request(topology, fabric, algorithm, src, dst, qp, port, now=0.0):
    """Send a FLOW_REQUEST in-band through the src NIC's ToR; apply and return the intents."""
    frame = from_nic(wire.FlowRequest(qp, src.ip, dst.ip, 10**6, port, 1))
    intents = algorithm.packet_in(topology.node(src.tor).dpid, src.tor_port, frame, now)
    intents += settle(algorithm)
    fabric.apply(intents)
    return intents


def settle(algorithm):
    """The intents of the algorithm's pending timer, fired when it asked."""
    due = algorithm.next_timer()
    return algorithm.timer(due) if due is not None else []


def grants(intents):
    out = {}
    for intent in intents:
        if isinstance(intent, PacketOut):
            assert parse_control(intent.data) is None  # replies go to the NIC, not the manager
            message = wire.decode(intent.data[42:])
            for grant in getattr(message, "grants", (message,)):  # RATE_GRANTS: several
                out[grant.qp] = (intent, grant)
    return out


def test_control_frame_decodes_with_scapy_as_rocev2():
    from scapy.contrib.roce import BTH
    from scapy.layers.l2 import Ether
    frame = control_frame("02:00:00:00:00:01", "10.0.0.1", wire.RateGrant(77, 5000, 3))
    packet = Ether(frame)
    assert packet["IP"].src == wire.MANAGER_IP and packet["IP"].dst == "10.0.0.1"
    assert packet["UDP"].dport == 4791 and packet[BTH].opcode == wire.Opcode.RATE_GRANT
    assert packet[BTH].dqpn == 77 and packet[BTH].psn == 3
    rebuilt = packet.copy()
    del rebuilt["IP"].chksum
    assert packet["IP"].chksum == Ether(bytes(rebuilt))["IP"].chksum  # header checksum valid


@pytest.mark.parametrize("cls", ALGOS)
@pytest.mark.parametrize("preset", ["rail-2tier-small", "rail-3tier"])
def test_announced_flows_follow_valid_loop_free_paths_and_are_granted(cls, preset):
    topology = load(preset)
    algorithm, fabric = programmed(topology, cls(topology))
    servers = [s.name for s in topology.servers()]
    pairs = [(nic(topology, a, 0), nic(topology, b, 1 % topology.spec.rails))
             for a in servers[:4] for b in servers[-4:] if a != b]
    rules = hops_with_a_choice = switch_hops = 0
    for qp, (src, dst) in enumerate(pairs, start=10):
        intents = request(topology, fabric, algorithm, src, dst, qp, 50000 + qp)
        granted = grants(intents)
        out, grant = granted[qp]
        assert (out.dpid, out.out_port) == (topology.node(src.tor).dpid, src.tor_port)
        assert grant.rate_kbps > 0 and intents[-1] is out
        hops, reached = fabric.trace(src, dst.ip, udp_src=50000 + qp)
        assert reached == (dst.server, dst.rail)
        assert len({hop.switch for hop in hops}) == len(hops)  # loop-free
        flow = algorithm.flows[(src.ip, qp)]
        assert [(h.switch, h.out_port) for h in hops] == list(flow.path[1:])
        # Rules only where ECMP could hash elsewhere (a rule is a flow-table change).
        rules += sum(isinstance(i, FlowRule) and i.priority == PRIORITY_FLOW for i in intents)
        prefix = tor_prefix(algorithm.finder.tors[dst.tor])
        hops_with_a_choice += sum(len(algorithm.healthy[h.switch][prefix]) > 1 for h in hops[:-1])
        switch_hops += len(hops) - 1
    assert rules == hops_with_a_choice
    assert rules < switch_hops or preset == "rail-3tier"  # parallel links: a choice everywhere


def test_a_repeated_request_is_granted_again_without_new_rules():
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, AdaptiveAlgorithm(topology))
    src, dst = nic(topology, "h1", 0), nic(topology, "h5", 0)
    request(topology, fabric, algorithm, src, dst, 9, 50001)
    again = request(topology, fabric, algorithm, src, dst, 9, 50001)
    assert len(again) == 1 and 9 in grants(again)


def test_adaptive_avoids_a_link_measured_loaded():
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, AdaptiveAlgorithm(topology))
    src, dst = nic(topology, "h1", 0), nic(topology, "h5", 0)
    tor = topology.node(src.tor)
    uplinks = sorted({path[1] for path in algorithm.finder.paths(src.ip, dst.ip)})
    loaded = uplinks[0]  # the one a tie would pick
    algorithm.port_stats(tor.dpid, [PortCounters(loaded[1], tx_bytes=0)], now=0.0)
    algorithm.port_stats(tor.dpid, [PortCounters(loaded[1], tx_bytes=1_250_000)], now=1.0)
    request(topology, fabric, algorithm, src, dst, 5, 50005, now=1.0)
    hops, _ = fabric.trace(src, dst.ip, udp_src=50005)
    assert (hops[0].switch, hops[0].out_port) != loaded


def test_adaptive_spreads_flows_of_one_tor_over_all_spines():
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, AdaptiveAlgorithm(topology))
    used = set()
    for qp, (a, b) in enumerate([("h1", "h5"), ("h2", "h6"), ("h3", "h7"), ("h4", "h8")], 1):
        src, dst = nic(topology, a, 0), nic(topology, b, 0)
        request(topology, fabric, algorithm, src, dst, qp, 50000 + qp)
        hops, _ = fabric.trace(src, dst.ip, udp_src=50000 + qp)
        used.add(hops[0].out_port)
    assert len(used) == topology.spec.spines


@pytest.mark.parametrize("cls", [AdaptiveAlgorithm, ProactiveAlgorithm])
def test_a_failed_link_is_routed_around(cls):
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, cls(topology))
    src, dst = nic(topology, "h1", 0), nic(topology, "h5", 0)
    request(topology, fabric, algorithm, src, dst, 3, 50003)
    hops, _ = fabric.trace(src, dst.ip, udp_src=50003)
    uplink = hops[0]
    link = algorithm.fabric.peer(uplink.switch, uplink.out_port).link
    fabric.apply(algorithm.link_change(link, False, now=2.0))
    hops, reached = fabric.trace(src, dst.ip, udp_src=50003)
    assert reached == (dst.server, dst.rail)
    assert (hops[0].switch, hops[0].out_port) != (uplink.switch, uplink.out_port)
    src2 = nic(topology, "h2", 0)
    request(topology, fabric, algorithm, src2, dst, 4, 50004, now=3.0)
    assert link.a.port not in {p for s, p in algorithm.flows[(src2.ip, 4)].path if s == link.a.node}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3), st.integers(0, 7),
                          st.integers(0, 3)), min_size=1, max_size=30))
def test_proactive_grants_never_oversubscribe_a_link(pairs):
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, ProactiveAlgorithm(topology))
    servers = [s.name for s in topology.servers()]
    rates: dict[tuple[str, int], float] = {}
    for qp, (a, ra, b, rb) in enumerate(pairs, start=100):
        if a == b:
            continue
        src, dst = nic(topology, servers[a], ra), nic(topology, servers[b], rb)
        for q, (_, grant) in grants(request(topology, fabric, algorithm, src, dst, qp,
                                            40000 + qp)).items():
            rates[(next(f.src_ip for f in algorithm.flows.values() if f.qp == q), q)] = \
                grant.rate_kbps / 1000
        paths = {key: algorithm.flows[key].path for key in rates}
        for link, load_mbps in link_loads(paths, rates).items():
            assert load_mbps <= algorithm.capacity[link] * 1.000001, (link, load_mbps)


def test_proactive_shares_an_incast_fairly_and_raises_rates_when_flows_end():
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, ProactiveAlgorithm(topology, headroom=1.0))
    dst = nic(topology, "h5", 0)
    for qp, server in enumerate(["h1", "h2"], start=1):
        last = grants(request(topology, fabric, algorithm, nic(topology, server, 0), dst, qp,
                              60000 + qp))
    assert last[2][1].rate_kbps == 5000 and last[1][1].rate_kbps == 5000
    frame = from_nic(wire.FlowDone(2, nic(topology, "h2", 0).ip, dst.ip, 0))
    assert not grants(algorithm.packet_in(topology.node("t0r0").dpid, 2, frame, 1.0))
    after = grants(settle(algorithm))  # flows finishing together are re-allocated once
    assert after[1][1].rate_kbps == 10000 and 2 not in after


def headline_round(topology):
    """The flows (src NIC, dst NIC, bytes) of the headline spec's first round, one per QP."""
    from pathlib import Path

    from experiments.workload.spec import load_spec
    spec = load_spec(Path(__file__).parents[3] / "experiments/specs/headline.toml")
    flows: dict[tuple[str, str], int] = {}
    for record in spec.transfer_records(topology):
        if record["iteration"] == 0:
            key = (record["src_ip"], record["dst_ip"])
            flows[key] = flows.get(key, 0) + record["size"]
    by_ip = {n.ip: n for s in topology.servers() for n in topology.nics_of(s.name)}
    return [(by_ip[a], by_ip[b], size) for (a, b), size in sorted(flows.items())]


def announce_all(topology, fabric, algorithm, flows, now=0.0):
    """Every flow's FLOW_REQUEST, 1 ms apart as a round's loads come; then the batch timer."""
    intents = []
    for qp, (src, dst, size) in enumerate(flows, start=1):
        frame = from_nic(wire.FlowRequest(qp, src.ip, dst.ip, size, 40000 + qp, 1))
        intents += algorithm.packet_in(topology.node(src.tor).dpid, src.tor_port, frame,
                                       now + qp * 0.001)
    assert not grants(intents)  # nothing granted before the batch is complete
    intents += settle(algorithm)
    fabric.apply(intents)
    return intents


@pytest.mark.parametrize("cls", [AdaptiveAlgorithm, ProactiveAlgorithm])
def test_a_round_announced_together_is_placed_without_a_collision(cls):
    # The headline's rings and All2All: a placement exists where no switch link carries
    # more than its capacity of expected rate (rings at line rate, All2All flows at a
    # quarter of it); one at a time, in arrival order, an All2All flow took a ring's spine.
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, cls(topology, batch_s=0.005, batch_max_s=1.0))
    flows = headline_round(topology)
    intents = announce_all(topology, fabric, algorithm, flows)
    assert len(grants(intents)) == len(flows) == len(algorithm.flows)
    for link, mbps in algorithm.link_demand.items():
        assert mbps <= algorithm.capacity[link] * 1.000001, (link, mbps)
    for qp, (src, dst, _) in enumerate(flows, start=1):
        hops, reached = fabric.trace(src, dst.ip, udp_src=40000 + qp)
        assert reached == (dst.server, dst.rail)


@pytest.mark.parametrize("cls", ALGOS)
def test_a_round_placed_together_is_granted_in_one_message_per_nic(cls):
    # 56 flows from 32 NICs: 32 packet-outs (each costs the switch's forwarding thread).
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, cls(topology, batch_s=0.005, batch_max_s=1.0))
    flows = headline_round(topology)
    intents = announce_all(topology, fabric, algorithm, flows)
    messages = [i for i in intents if isinstance(i, PacketOut)]
    nics = {src.ip for src, _, _ in flows}
    assert len(grants(intents)) == len(flows) > len(messages) == len(nics)
    for intent in messages:  # each out of its NIC's ToR port, to that NIC's QPs only
        granted = grants([intent])
        owners = {flows[qp - 1][0] for qp in granted}
        assert len(owners) == 1
        owner = owners.pop()
        assert (intent.dpid, intent.out_port) == (topology.node(owner.tor).dpid, owner.tor_port)


def test_proactive_grants_the_headline_rings_their_line_rate_and_regrants_when_flows_end():
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, ProactiveAlgorithm(topology, headroom=0.99))
    flows = headline_round(topology)
    granted = {q: g.rate_kbps for q, (_, g) in
               grants(announce_all(topology, fabric, algorithm, flows)).items()}
    line = topology.spec.nic_mbps * 1000 * 0.99
    ring = [q for q, (_, _, size) in enumerate(flows, start=1) if size > 10**6]  # 4 x 1/3 MB
    assert ring and all(granted[q] >= line - 1 for q in ring)
    # An All2All NIC sends to 4 NICs and receives from 4: a quarter each; when the other
    # flows of its sender and of its receiver are done, it gets the whole line rate.
    a2a = [q for q in granted if q not in ring]
    kept = a2a[0]
    src, dst = flows[kept - 1][0], flows[kept - 1][1]
    sharing = [q for q in a2a if q != kept and (flows[q - 1][0] is src or flows[q - 1][1] is dst)]
    assert len(sharing) == 6 and all(abs(granted[q] - line / 4) <= 1 for q in sharing + [kept])
    for q in sharing:
        frame = from_nic(wire.FlowDone(q, flows[q - 1][0].ip, flows[q - 1][1].ip, 0))
        tor = flows[q - 1][0]
        algorithm.packet_in(topology.node(tor.tor).dpid, tor.tor_port, frame, 1.0)
    after = {k: g.rate_kbps for k, (_, g) in grants(settle(algorithm)).items()}
    assert after[kept] >= line - 1 and set(after) <= set(granted) - set(sharing)



def deletions(intents):
    """(switch, UDP source port) of every flow rule the intents remove."""
    return {(i.dpid, i.match["udp_src"]) for i in intents
            if isinstance(i, FlowRule) and i.command == "delete"}


@pytest.mark.parametrize("cls", ALGOS)
def test_a_finished_flows_rules_are_removed_together_later_never_a_replaced_one(cls):
    # Each rule change makes OVS revalidate every datapath flow: a finished flow's rules
    # go when no announced flow is left, or STALE_FLUSH_S after the first finished.
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, cls(topology))
    dst = nic(topology, "h5", 0)
    senders = {qp: nic(topology, server, 0) for qp, server in enumerate(["h1", "h2"], 1)}

    def pinned(qp):
        flow = algorithm.flows[(senders[qp].ip, qp)]
        return {(rule.dpid, 60000 + qp) for rule in algorithm.rules(flow)}

    def done(qp, now):
        frame = from_nic(wire.FlowDone(qp, senders[qp].ip, dst.ip, 0))
        return algorithm.packet_in(topology.node(senders[qp].tor).dpid,
                                   senders[qp].tor_port, frame, now)

    for qp in senders:
        request(topology, fabric, algorithm, senders[qp], dst, qp, 60000 + qp)
    first = pinned(2)
    assert not deletions(done(2, 1.0))              # flow 1 still runs
    assert not deletions(settle(algorithm))         # the re-allocation comes first
    assert algorithm.next_timer() == pytest.approx(1.0 + STALE_FLUSH_S)
    assert deletions(settle(algorithm)) == first and algorithm.next_timer() is None
    # Flow 2 again, done, and again before its rules went: the new rules stay.
    request(topology, fabric, algorithm, senders[2], dst, 2, 60002, now=3.0)
    assert not deletions(done(2, 3.5) + settle(algorithm))
    request(topology, fabric, algorithm, senders[2], dst, 2, 60002, now=3.6)
    again = pinned(2)
    assert not deletions(algorithm.timer(3.5 + STALE_FLUSH_S)) & again
    # The last flow to finish takes every finished flow's rules with it.
    last = pinned(1)
    assert not deletions(done(1, 5.0))
    assert deletions(done(2, 5.1)) == last | again
