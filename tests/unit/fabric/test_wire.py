"""RoCEv2-like wire format: round trips, scapy.contrib.roce decoding, bad input."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.contrib.roce import AETH, BTH, CNPPadding, cnp
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from controllers.core.inband import control_frame
from fabric.nic import wire
from fabric.nic.qp import SendQP
from fabric.nic.records import SentMessage

u24 = st.integers(0, 2**24 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
ips = st.ip_addresses(v=4).map(str)

messages = st.one_of(
    st.builds(wire.Data, dest_qp=u24, psn=u24, send_ts_ns=u64, message_id=u64,
              message_length=u32, offset=u32, padding=st.integers(0, 9000),
              opcode=st.sampled_from(sorted(wire.DATA_OPCODES)), ack_req=st.booleans(),
              becn=st.booleans()),
    st.builds(wire.Ack, dest_qp=u24, psn=u24, msn=u24, syndrome=st.integers(0, 255)),
    st.builds(wire.Cnp, dest_qp=u24, last_hop=st.booleans()),
    st.builds(wire.FlowRequest, qp=u24, src_ip=ips, dst_ip=ips, size_bytes=u64,
              src_port=st.integers(0, 65535), seq=u24),
    st.builds(wire.RateGrant, qp=u24, rate_kbps=u32, seq=u24),
    st.builds(wire.FlowDone, qp=u24, src_ip=ips, dst_ip=ips, size_bytes=u64, seq=u24),
    st.builds(wire.RateGrants, grants=st.lists(st.builds(wire.RateGrant, qp=u24, rate_kbps=u32,
                                                         seq=u24),
                                               min_size=1, max_size=wire.MAX_GRANTS).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_every_message_kind_round_trips(message):
    data = wire.encode(message)
    assert wire.decode(data) == message
    assert data[0] == {wire.Data: message.opcode if isinstance(message, wire.Data) else 0,
                       wire.Ack: 0x11, wire.Cnp: 0x81, wire.FlowRequest: 0xC0,
                       wire.RateGrant: 0xC1, wire.FlowDone: 0xC2,
                       wire.RateGrants: 0xC3}[type(message)]
    assert data[2:4] == b"\xff\xff"  # P_Key


def _scapy(payload: bytes, sport: int = 50000):
    packet = IP(src="10.0.0.1", dst="10.1.0.1") / UDP(sport=sport, dport=wire.ROCE_PORT)
    return IP(raw(packet / Raw(payload)))


@settings(max_examples=100, deadline=None)
@given(qp=u24, psn=u24, padding=st.integers(0, 200), ack_req=st.booleans())
def test_scapy_decodes_our_data_packets(qp, psn, padding, ack_req):
    payload = wire.encode(wire.Data(qp, psn, 123, 7, 1000, 0, padding, wire.Opcode.SEND_FIRST,
                                    ack_req=ack_req))
    bth = _scapy(payload)[BTH]
    assert (bth.opcode, bth.dqpn, bth.psn, bth.ackreq, bth.pkey) == (0x00, qp, psn, ack_req,
                                                                      0xFFFF)
    assert raw(bth.payload) == payload[wire.BTH_LEN:-wire.ICRC_LEN]
    ts, message_id, length, offset = struct.unpack("!QQII", raw(bth.payload)[:24])
    assert (ts, message_id, length, offset) == (123, 7, 1000, 0)


def test_scapy_decodes_frames_the_nic_and_the_controller_build():
    """Scapy, not our decoder, reads a NIC data packet (SendQP's fast codec) and a controller CNP."""
    qp = SendQP(0xABCDE, "10.0.0.1", 0, "10.1.0.1", 50123, 1500, 10.0, window=8, rto_s=0.05,
                ack_every=2, now_ns=0)
    qp.add_share(SentMessage(7, 0, "10.1.0.1", 3000, 1), 0, 3000)
    for psn in range(3):
        payload, _, _, _ = qp.take(0.0, 99)
        frame = raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                    IP(src="10.0.0.1", dst="10.1.0.1") / UDP(sport=50123, dport=wire.ROCE_PORT)
                    / Raw(bytes(payload)))
        packet = Ether(frame)
        bth = packet[BTH]
        assert packet[UDP].dport == 4791 and (bth.dqpn, bth.psn) == (0xABCDE, psn)
        assert bth.opcode == (0x00, 0x01, 0x02)[psn]  # SEND_FIRST, MIDDLE, LAST
        assert bth.ackreq == (psn in (1, 2)) and bth.becn == 0 and bth.pkey == 0xFFFF
    cnp_frame = Ether(control_frame("02:00:00:00:00:01", "10.0.0.1", wire.Cnp(0x1234)))
    assert cnp_frame[IP].dst == "10.0.0.1" and cnp_frame[UDP].dport == 4791
    assert (cnp_frame[BTH].opcode, cnp_frame[BTH].dqpn, cnp_frame[BTH].psn) == (0x81, 0x1234, 0)
    assert cnp_frame[BTH].becn == 1 and cnp_frame.haslayer(CNPPadding)


def test_scapy_decodes_ack_and_nak_aeth():
    ack = _scapy(wire.encode(wire.Ack(9, 500, msn=3)))
    assert ack[BTH].opcode == 0x11 and ack[BTH].psn == 500 and ack[BTH].dqpn == 9
    assert (ack[AETH].syndrome, ack[AETH].msn) == (wire.SYNDROME_ACK, 3)
    nak = _scapy(wire.encode(wire.nak(9, 42)))
    assert nak[AETH].syndrome == 0x60 and nak[BTH].psn == 42
    assert wire.decode(wire.encode(wire.nak(9, 42))).is_nak
    assert not wire.Ack(9, 42).is_nak


def test_cnp_bytes_equal_scapys_cnp_including_icrc():
    ip = IP(src="10.2.0.1", dst="10.2.1.3", id=99)
    theirs = raw(ip / UDP(sport=51000, dport=wire.ROCE_PORT) / cnp(0xABCDE))
    ours_without_icrc = wire.encode(wire.Cnp(0xABCDE))
    assert ours_without_icrc[:-4] == theirs[28:-4]
    assert len(theirs) == 28 + len(ours_without_icrc)
    value = wire.icrc(theirs[:20], theirs[20:28], ours_without_icrc)
    assert wire.encode(wire.Cnp(0xABCDE), icrc=value) == theirs[28:]
    parsed = IP(theirs)
    assert parsed[BTH].becn == 1 and parsed.haslayer(CNPPadding)


def test_icrc_matches_scapy_for_data():
    message = wire.Data(77, 2**24 - 1, 5, 6, 7, 8, padding=33)
    body = wire.encode(message)[wire.BTH_LEN:-wire.ICRC_LEN]
    packet = raw(IP(src="10.0.1.1", dst="10.0.0.2", id=1234, flags="DF") /
                 UDP(sport=wire.udp_source_port(77), dport=wire.ROCE_PORT) /
                 BTH(opcode=4, dqpn=77, psn=2**24 - 1) / Raw(body))
    value = wire.icrc(packet[:20], packet[20:28], packet[28:])
    assert wire.encode(message, icrc=value) == packet[28:]
    assert value != 0


@pytest.mark.parametrize("data, fragment", [
    (b"", "too short"),
    (bytes(15), "too short"),
    (bytes([0x33]) + bytes(15), "unknown opcode 0x33"),
    (wire.encode(wire.Ack(1, 2))[:-5] + bytes(4), "ack: body must be 4 bytes"),
    (wire.encode(wire.Cnp(1))[:-6] + bytes(4), "cnp: body must be 16"),
    (wire.encode(wire.Data(1, 2, 3, 4, 5, 6))[:20] + bytes(4), "data: body must be at least 24"),
    (wire.encode(wire.RateGrant(1, 2)) + b"x", "rate_grant: body must be 4"),
    (wire.encode(wire.RateGrants((wire.RateGrant(1, 2),)))[:-5] + bytes(4),
     "rate_grants: body must be 1..256 grants of 12 bytes, got 11"),
    (bytes([0xC3]) + bytes(15), "rate_grants: body must be 1..256 grants of 12 bytes, got 0"),
])
def test_bad_input_raises_wire_error_saying_why(data, fragment):
    with pytest.raises(wire.WireError, match=fragment):
        wire.decode(data)


def test_encode_rejects_out_of_range_fields():
    with pytest.raises(wire.WireError, match="psn"):
        wire.encode(wire.Data(1, 2**24, 0, 0, 0, 0))
    with pytest.raises(wire.WireError, match="dest_qp"):
        wire.encode(wire.Cnp(-1))
    with pytest.raises(wire.WireError, match="flow_request.src_ip"):
        wire.encode(wire.FlowRequest(1, "10.0.0", "10.0.0.1", 5, 6))
    with pytest.raises(wire.WireError, match="rate_grant"):
        wire.encode(wire.RateGrant(1, 2**32))
    with pytest.raises(wire.WireError, match="rate_grants: must carry 1..256 grants, got 0"):
        wire.encode(wire.RateGrants(()))
    with pytest.raises(wire.WireError, match="rate_grants.qp"):
        wire.encode(wire.RateGrants((wire.RateGrant(2**24, 1),)))
    with pytest.raises(wire.WireError, match="data.opcode"):
        wire.encode(wire.Data(1, 2, 0, 0, 0, 0, opcode=wire.Opcode.CNP))


def test_frame_size_helpers_respect_mtu():
    assert wire.DATA_OVERHEAD == 20 + 8 + 12 + 24 + 4
    assert wire.max_padding(9000) == 9000 - 68
    assert wire.ip_packet_size(wire.max_padding(1500)) == 1500
    packet = wire.encode(wire.Data(1, 2, 3, 4, 5, 6, padding=1000 - wire.DATA_OVERHEAD))
    assert 28 + len(packet) == 1000 == wire.ip_packet_size(1000 - wire.DATA_OVERHEAD)
    with pytest.raises(wire.WireError, match="mtu"):
        wire.max_padding(60)


def test_udp_source_port_is_deterministic_entropy_in_dynamic_range():
    ports = [wire.udp_source_port(qp, salt=3) for qp in range(2000)]
    assert all(49152 <= port <= 65535 for port in ports)
    assert ports == [wire.udp_source_port(qp, salt=3) for qp in range(2000)]
    assert len(set(ports)) > 1800  # spreads QPs (ECMP entropy)
    changed = sum(wire.udp_source_port(qp, 1) != wire.udp_source_port(qp, 2) for qp in range(100))
    assert changed > 90  # a new salt re-rolls the paths
