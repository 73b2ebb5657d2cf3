"""QPs of the agent: segmentation over QPs, the fast data codec, QP numbering, go-back-N use."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.nic import wire
from fabric.nic.qp import SendQP, packet_count, qp_number, segment, split_sizes
from fabric.nic.records import SentMessage


@given(st.integers(1, 10**7), st.integers(1, 64))
def test_split_sizes_cover_the_message(size, qps):
    sizes = split_sizes(size, qps)
    assert sum(sizes) == size and all(s > 0 for s in sizes)
    assert len(sizes) == min(qps, size) and max(sizes) - min(sizes) <= 1


def segments(length, chunk):
    """The test's oracle: the whole share cut into (offset, bytes, opcode) packets at once."""
    offsets = list(range(0, length, chunk))
    if len(offsets) == 1:
        return [(0, length, wire.Opcode.SEND_ONLY)]
    ops = ([wire.Opcode.SEND_FIRST] + [wire.Opcode.SEND_MIDDLE] * (len(offsets) - 2)
           + [wire.Opcode.SEND_LAST])
    return [(offset, min(chunk, length - offset), op) for offset, op in zip(offsets, ops)]


@given(st.integers(1, 200_000), st.sampled_from([1500, 4096, 9000]))
def test_segment_matches_cutting_the_whole_share(length, mtu):
    chunk = wire.max_padding(mtu)
    expected = segments(length, chunk)
    assert packet_count(length, chunk) == len(expected)
    assert [segment(length, chunk, i) for i in range(len(expected))] == expected


def test_segments_cover_the_share_with_ib_opcodes():
    chunk = wire.max_padding(1500)
    parts = [segment(2 * chunk + 10, chunk, i) for i in range(3)]
    assert [(o, n) for o, n, _ in parts] == [(0, chunk), (chunk, chunk), (2 * chunk, 10)]
    assert [op for _, _, op in parts] == [wire.Opcode.SEND_FIRST, wire.Opcode.SEND_MIDDLE,
                                          wire.Opcode.SEND_LAST]
    assert packet_count(5, chunk) == 1 and segment(5, chunk, 0) == (0, 5, wire.Opcode.SEND_ONLY)


def test_qp_numbers_are_deterministic_unique_and_not_special():
    taken: dict[int, object] = {}
    for remote in range(50):
        for index in range(8):
            qp = qp_number("10.0.0.1", f"10.0.1.{remote}", index, taken)
            assert qp not in taken and qp not in (0, 1) and 0 < qp < 2**24
            taken[qp] = None
    assert qp_number("10.0.0.1", "10.0.1.1", 0, {}) == qp_number("10.0.0.1", "10.0.1.1", 0, {})


def _qp(mtu: int = 1500, ack_every: int = 4) -> SendQP:
    return SendQP(0x1234, "10.0.0.1", 0, "10.0.1.1", 50000, mtu, 10.0, window=8, rto_s=0.05,
                  ack_every=ack_every, now_ns=0)


def test_fast_codec_builds_what_wire_encode_builds():
    qp = _qp()
    message = SentMessage(77, 0, "10.0.1.1", 5000, 2)
    qp.add_share(message, base_offset=2500, length=2500)
    chunk = wire.max_padding(1500)
    for index in range(packet_count(2500, chunk)):
        payload, taken, share, again = qp.take(1.0, 123456789)
        qp.sent(taken)
        offset, length, opcode = segment(2500, chunk, index)
        ack_req = index == packet_count(2500, chunk) - 1 or (index + 1) % 4 == 0
        expected = wire.encode(wire.Data(0x1234, index, 123456789, 77, 5000, 2500 + offset,
                                         length, opcode, ack_req))
        assert bytes(payload) == expected
        assert wire.ip_packet_size(length) <= 1500 and not again
        decoded = wire.decode(bytes(payload))
        assert decoded.offset == 2500 + offset and decoded.padding == length


def test_psns_continue_across_messages_and_shares_complete_in_order():
    qp = _qp(mtu=1500)
    first, second = SentMessage(1, 0, "x", 3000, 1), SentMessage(2, 0, "x", 1000, 1)
    qp.add_share(first, 0, 3000)   # 3 packets
    qp.add_share(second, 0, 1000)  # 1 packet
    psns = []
    while qp.has_work():
        payload, index, share, _ = qp.take(0.0, 0)
        qp.sent(index)
        psns.append(wire.decode(bytes(payload)).psn)
    assert psns == [0, 1, 2, 3]
    assert [s.message.id for s in qp.on_ack(2, False, 0.01)] == [1]
    assert [s.message.id for s in qp.on_ack(3, False, 0.02)] == [2]
    assert qp.gbn.done


def test_nak_and_timeout_are_charged_to_the_message_being_resent():
    qp = _qp(mtu=1500)
    message = SentMessage(1, 0, "x", 6000, 1)
    qp.add_share(message, 0, 6000)
    for _ in range(4):
        qp.sent(qp.take(0.0, 0)[1])
    qp.on_ack(1, True, 0.001)   # NAK: expected PSN 1
    assert message.naks == 1
    payload, index, share, again = qp.take(0.002, 0)
    assert index == 1 and again
    assert qp.poll(10.0) and message.timeouts == 1


def test_unsend_puts_the_packet_back():
    qp = _qp()
    qp.add_share(SentMessage(1, 0, "x", 100, 1), 0, 100)
    _, index, _, _ = qp.take(0.0, 0)
    qp.unsend(index)
    assert qp.has_work() and qp.take(0.0, 0)[1] == index


def test_effective_timeout_covers_coalesced_acks():
    qp = _qp(mtu=9000, ack_every=8)
    assert qp.timeout_s() == pytest.approx(0.05 + 8 * 9014 * 8 / 10e6)
    qp.set_rate(5.0, 0)
    assert qp.timeout_s() == pytest.approx(0.05 + 8 * 9014 * 8 / 5e6)
