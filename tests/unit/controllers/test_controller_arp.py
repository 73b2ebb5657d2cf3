"""ARP: the ECMP controller answers requests for fabric NICs out of the in port, nothing else."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import ARP, Ether

from controllers.core.arp import arp_reply, parse_arp
from controllers.algorithms.ecmp import EcmpAlgorithm
from controllers.core.intents import PacketOut
from topologies import load

BROADCAST = "ff:ff:ff:ff:ff:ff"


@pytest.fixture(scope="module", params=["rail-2tier-small", "rail-3tier", "fat-tree-k4"])
def topo_algo(request):
    topology = load(request.param)
    return topology, EcmpAlgorithm(topology)


def request_frame(asker, target_ip: str, op: int = 1) -> bytes:
    return bytes(Ether(src=asker.mac, dst=BROADCAST) /
                 ARP(op=op, hwsrc=asker.mac, psrc=asker.ip, pdst=target_ip))


def test_request_for_every_nic_gets_its_mac_back_out_of_in_port(topo_algo):
    topology, algorithm = topo_algo
    asker = topology.nics[0]
    tor = topology.node(asker.tor)
    for target in topology.nics[1:]:
        intents = algorithm.packet_in(tor.dpid, asker.tor_port, request_frame(asker, target.ip), 3.0)
        assert len(intents) == 1 and isinstance(intents[0], PacketOut)
        out = intents[0]
        assert (out.dpid, out.out_port, out.in_port) == (tor.dpid, asker.tor_port, None)
        reply = Ether(out.data)
        assert reply.dst == asker.mac and reply.src == target.mac and reply.type == 0x0806
        assert reply[ARP].op == 2
        assert (reply[ARP].hwsrc, reply[ARP].psrc) == (target.mac, target.ip)
        assert (reply[ARP].hwdst, reply[ARP].pdst) == (asker.mac, asker.ip)
        assert len(out.data) >= 60


def test_unknown_ip_reply_uplink_and_non_tor_get_nothing(topo_algo):
    topology, algorithm = topo_algo
    asker, target = topology.nics[0], topology.nics[-1]
    tor = topology.node(asker.tor)
    uplink = next(l.a.port for l in topology.links if l.a.node == tor.name and l.tier != "host")
    spine = topology.switches("spine")[0]
    assert algorithm.packet_in(tor.dpid, asker.tor_port, request_frame(asker, "10.9.9.9"), 0) == []
    assert algorithm.packet_in(tor.dpid, asker.tor_port, request_frame(asker, target.ip, op=2), 0) == []
    assert algorithm.packet_in(tor.dpid, uplink, request_frame(asker, target.ip), 0) == []
    assert algorithm.packet_in(spine.dpid, 1, request_frame(asker, target.ip), 0) == []
    assert algorithm.packet_in(0xBAD, 1, request_frame(asker, target.ip), 0) == []
    ipv4 = bytes(Ether(src=asker.mac, dst=target.mac, type=0x0800) / (b"\x45" + bytes(40)))
    assert algorithm.packet_in(tor.dpid, asker.tor_port, ipv4, 0) == []
    assert algorithm.packet_in(tor.dpid, asker.tor_port, b"\x00" * 10, 0) == []


def test_parse_and_build_round_trip():
    frame = bytes(Ether(src="02:00:01:00:00:03", dst=BROADCAST) /
                  ARP(op=1, hwsrc="02:00:01:00:00:03", psrc="10.1.0.4", pdst="10.1.1.2"))
    parsed = parse_arp(frame)
    assert parsed is not None
    assert (parsed.op, parsed.sender_ip, parsed.target_ip) == (1, "10.1.0.4", "10.1.1.2")
    assert parsed.sender_mac == "02:00:01:00:00:03"
    reply = ARP(arp_reply(parsed, "02:00:01:01:00:01")[14:])
    assert (reply.op, reply.psrc, reply.hwsrc, reply.pdst) == (2, "10.1.1.2", "02:00:01:01:00:01", "10.1.0.4")
