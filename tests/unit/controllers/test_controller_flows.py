"""adaptive / proactive / reactive on a fake fabric: announced flows get valid, loop-free
paths; adaptive avoids loaded and failed links; proactive never oversubscribes a link;
reactive notifies exactly the flows crossing a hot port; grants reach the right NIC."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.controllers.fakeoftable import programmed

from controllers.algorithms.adaptive import AdaptiveAlgorithm  # noqa: E402
from controllers.core.events import PortCounters  # noqa: E402
from controllers.core.inband import control_frame, parse_control  # noqa: E402
from controllers.core.intents import PacketOut  # noqa: E402
from controllers.core.maxmin import link_loads  # noqa: E402
from controllers.algorithms.proactive import ProactiveAlgorithm  # noqa: E402
from controllers.algorithms.reactive import ReactiveAlgorithm  # noqa: E402
from fabric.nic import wire  # noqa: E402
from topologies import load  # noqa: E402

ALGOS = [AdaptiveAlgorithm, ProactiveAlgorithm, ReactiveAlgorithm]


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
    fabric.apply(intents)
    return intents


def grants(intents):
    out = {}
    for intent in intents:
        if isinstance(intent, PacketOut):
            assert parse_control(intent.data) is None  # replies go to the NIC, not the manager
            message = wire.decode(intent.data[42:])
            out[message.qp] = (intent, message)
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
    after = grants(algorithm.packet_in(topology.node("t0r0").dpid, 2, frame, 1.0))
    assert after[1][1].rate_kbps == 10000 and 2 not in after


def test_reactive_notifies_exactly_the_flows_crossing_the_hot_port():
    topology = load("rail-2tier-small")
    algorithm, fabric = programmed(topology, ReactiveAlgorithm(topology))
    for qp, (a, b) in enumerate([("h1", "h5"), ("h2", "h6"), ("h3", "h7"), ("h4", "h8"),
                                 ("h1", "h6")], 1):
        request(topology, fabric, algorithm, nic(topology, a, 0), nic(topology, b, 0), qp,
                50000 + qp)
    busy = max(algorithm.on_link, key=lambda link: (len(algorithm.on_link[link]), link))
    crossing = algorithm.on_link[busy]
    assert len(crossing) >= 2
    dpid = topology.node(busy[0]).dpid
    algorithm.port_stats(dpid, [PortCounters(busy[1], tx_bytes=0)], now=0.0)
    intents = algorithm.port_stats(dpid, [PortCounters(busy[1], tx_bytes=1_240_000)], now=1.0)
    notified = {(parse_dst(i), wire.decode(i.data[42:]).dest_qp) for i in intents}
    assert all(isinstance(wire.decode(i.data[42:]), wire.Cnp) for i in intents)
    assert notified == {(algorithm.flows[k].src_ip, k[1]) for k in crossing}
    quiet = algorithm.port_stats(dpid, [PortCounters(busy[1], tx_bytes=1_300_000)], now=2.0)
    assert quiet == []  # 0.5 Mb/s: not congested


def parse_dst(intent):
    import socket
    return socket.inet_ntoa(intent.data[30:34])
